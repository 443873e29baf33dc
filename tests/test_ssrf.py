"""The SSRF guard: a battery of URLs, pinned outbound connections (DNS rebinding, redirects,
TLS name kept), deployment checks at start-up, and client URLs refused by a real proxy.

Names resolve through an injected resolver (a dict: there is no DNS for made-up names
offline); IP literals need none. Local servers bind 127.0.0.1 on free ports; a "public"
address is mapped to them by the pinned client's ``dial`` hook, the only test-only seam.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from routeiq.security.ssrf import SSRFSettings, UnsafeURLError, check_url
from routeiq.security.ssrf_host import parse_ipv4
from routeiq.security.ssrf_litellm import client_url_refusal, deployment_url_problems

PUBLIC = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"
DNS: dict[str, list[str]] = {
    "api.example.com": [PUBLIC],
    "dual.example.com": [PUBLIC, PUBLIC6],
    "xn--bcher-kva.example": [PUBLIC],
    "mixed.example.com": [PUBLIC, "127.0.0.1"],
    "mixed6.example.com": [PUBLIC, "::1"],
    "private.example.com": ["10.1.2.3"],
    "meta.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:192.168.0.1"],
    "empty.example.com": [],
    "vllm.internal": ["10.0.0.5"],
    "llm.svc.cluster.local": ["10.8.0.9"],
}


def resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


REFUSED = [
    # scheme / shape
    ("ftp://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://8.8.8.8:70/", "scheme"),
    ("javascript:alert(1)", "malformed"),
    ("http:///path", "empty-host"),
    ("http://:80/", "empty-host"),
    ("http://user@/", "empty-host"),
    ("http://exa mple.com/", "malformed"),
    ("http://127.0.0.1\\@api.example.com/", "malformed"),
    ("http://a@b@8.8.8.8/", "malformed"),
    ("http://%31%32%37.0.0.1/", "malformed"),
    ("http://1.2.3.256/", "malformed"),
    ("http://foo.1/", "malformed"),
    ("http://08.0.0.1/", "malformed"),
    ("http://[::1/", "malformed"),
    ("http://::1/", "malformed"),
    ("http://8.8.8.8:99999/", "malformed"),
    ("http://8.8.8.8:abc/", "malformed"),
    # ports
    ("http://8.8.8.8:22/", "port"),
    ("https://api.example.com:6379/", "port"),
    # loopback in every encoding
    ("http://127.0.0.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://api.example.com@127.0.0.1/", "loopback"),
    ("http://api.example.com:pw@127.0.0.1:80/", "loopback"),
    ("http://127.0.0.1#@api.example.com/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST./", "loopback"),
    ("http://foo.localhost/", "loopback"),
    ("http://ⓛocalhost/", "loopback"),
    ("http://１２７.０.０.１/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
    ("http://[64:ff9b::127.0.0.1]/", "loopback"),  # NAT64
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),  # Teredo client 127.0.0.1
    ("http://mixed.example.com/", "loopback"),  # one bad A record is enough
    ("http://mixed6.example.com/", "loopback"),  # one bad AAAA record is enough
    # metadata endpoints
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://2852039166/", "metadata"),
    ("http://0xa9fea9fe/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://168.63.129.16/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://METADATA.GOOGLE.INTERNAL./", "metadata"),
    ("http://meta.example.com/", "metadata"),
    # private, unique-local, link-local, CGNAT
    ("http://10.0.0.5/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fec0::1]/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://private.example.com/", "private"),
    ("http://mapped.example.com/", "private"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://100.64.0.1/", "cgnat"),
    ("http://100.127.255.254/", "cgnat"),
    # the rest of the special ranges
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://0.1.2.3/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "not-global"),
    ("http://198.18.0.1/", "not-global"),
    ("http://[2001:db8::1]/", "not-global"),
    ("http://[64:ff9b:1::808:808]/", "not-global"),
    # names that do not resolve
    ("http://nxdomain.example/", "unresolvable"),
    ("http://empty.example.com/", "unresolvable"),
]

ALLOWED = [
    ("http://8.8.8.8/", ("8.8.8.8",)),
    ("https://8.8.8.8/", ("8.8.8.8",)),
    ("HTTPS://API.example.com/v1", (PUBLIC,)),
    ("https://api.example.com:443/v1", (PUBLIC,)),
    ("http://api.example.com:80", (PUBLIC,)),
    ("https://api.example.com./", (PUBLIC,)),
    ("https://user:pw@api.example.com/", (PUBLIC,)),
    ("https://dual.example.com/", (PUBLIC, PUBLIC6)),
    ("https://bücher.example/", (PUBLIC,)),
    ("http://134744072/", ("8.8.8.8",)),
    ("http://0x8.0x8.0x8.0x8/", ("8.8.8.8",)),
    ("http://[2001:4860:4860::8888]/", ("2001:4860:4860::8888",)),
    ("http://[::ffff:8.8.8.8]/", ("::ffff:808:808",)),
    ("http://[64:ff9b::808:808]/", ("64:ff9b::808:808",)),
    ("http://[2002:808:808::1]/", ("2002:808:808::1",)),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError) as info:
        check_url(url, SSRFSettings(), resolver)
    assert info.value.reason == reason, str(info.value)
    assert url[:40] in str(info.value) or "not a string" in str(info.value)


@pytest.mark.parametrize(("url", "addresses"), ALLOWED)
def test_allowed(url: str, addresses: tuple[str, ...]) -> None:
    checked = check_url(url, SSRFSettings(), resolver)
    assert tuple(ip.compressed for ip in checked.addresses) == addresses
    assert checked.allowed_by == "global"


def test_battery_is_large_and_covers_every_reason() -> None:
    from routeiq.security.ssrf_errors import REASONS

    assert len(REFUSED) + len(ALLOWED) >= 40
    assert {reason for _, reason in REFUSED} == REASONS - {"denied"}


def test_normalised_host_and_port() -> None:
    checked = check_url("HTTPS://Bücher.Example.:443/x", SSRFSettings(), resolver)
    assert (checked.scheme, checked.host, checked.port) == ("https", "xn--bcher-kva.example", 443)
    assert parse_ipv4("0300.0250.0.1") == ipaddress.IPv4Address("192.168.0.1")
    assert parse_ipv4("10.1") == ipaddress.IPv4Address("10.0.0.1")
    assert parse_ipv4("api.example.com") is None


def test_allow_lists() -> None:
    s = SSRFSettings(allow_cidrs=["10.0.0.0/24"], allow_ports=[8000])
    assert check_url("http://10.0.0.5:8000/v1", s).allowed_by == "allow_cidrs"
    with pytest.raises(UnsafeURLError, match=r"\(private\)"):
        check_url("http://10.0.1.5:8000/", s)
    with pytest.raises(UnsafeURLError, match=r"port 8001 is not allowed.*\(port\)"):
        check_url("http://10.0.0.5:8001/", s)
    hosts = SSRFSettings(allow_hosts=["vllm.internal", "*.svc.cluster.local"])
    assert check_url("http://vllm.internal/v1", hosts, resolver).allowed_by == "allow_hosts"
    assert check_url("http://llm.svc.cluster.local/", hosts, resolver).addresses == (
        ipaddress.ip_address("10.8.0.9"),
    )
    with pytest.raises(UnsafeURLError, match=r"\(private\)"):
        check_url("http://private.example.com/", hosts, resolver)


def test_metadata_is_refused_whatever_the_allow_lists_say() -> None:
    wide = SSRFSettings(
        allow_cidrs=["169.254.0.0/16", "100.64.0.0/10"],
        allow_hosts=["metadata.google.internal", "meta.example.com"],
    )
    assert check_url("http://100.64.0.1/", wide).allowed_by == "allow_cidrs"
    for url in (
        "http://169.254.169.254/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/",
        "http://meta.example.com/",
    ):
        with pytest.raises(UnsafeURLError) as info:
            check_url(url, wide, resolver)
        assert info.value.reason == "metadata"


def test_deny_cidrs_win() -> None:
    s = SSRFSettings(allow_cidrs=["8.8.0.0/16"], deny_cidrs=["8.8.8.0/24"])
    with pytest.raises(UnsafeURLError) as info:
        check_url("http://8.8.8.8/", s)
    assert info.value.reason == "denied"
    assert check_url("http://8.8.4.4/", s).allowed_by == "global"


def test_settings_are_validated_with_clear_errors() -> None:
    with pytest.raises(ValidationError, match="is not an address range"):
        SSRFSettings(allow_cidrs=["10.0.0.0/33"])
    with pytest.raises(ValidationError, match="is not a host name"):
        SSRFSettings(allow_hosts=["bad host"])
    with pytest.raises(ValidationError):
        SSRFSettings(allow_ports=[0])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SSRFSettings.model_validate({"enabled": True, "allow_cidr": ["10.0.0.0/8"]})
    from routeiq.serving.settings import RouteIQConfigError
    from routeiq.serving.settings_file import parse_settings

    assert parse_settings({}).ssrf.enabled is False  # off unless configured
    with pytest.raises(RouteIQConfigError, match=r"ssrf\.allow_cidrs"):
        parse_settings({"ssrf": {"allow_cidrs": ["nope"]}})


def test_system_resolver_times_out_and_fails_clearly() -> None:
    from routeiq.security.ssrf import SystemResolver

    assert ipaddress.ip_address("127.0.0.1") in SystemResolver(2.0)("localhost", 80)
    with pytest.raises(UnsafeURLError) as info:
        check_url("http://no-such-host.invalid/", SSRFSettings(resolve_timeout_s=2.0))
    assert info.value.reason == "unresolvable"


# --- pinned outbound connections -------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append((self.path, self.headers.get("Host")))
        target = server.redirects.get(self.path)
        self.send_response(302 if target else 200)
        if target:
            self.send_header("Location", target)
        body = f"{server.name} {self.path}".encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    """Two local HTTP servers: "public" (what checked addresses dial) and "internal"."""
    running = {}
    for name in ("public", "internal"):
        srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        srv.name, srv.seen, srv.redirects, srv.daemon_threads = name, [], {}, True
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        running[name] = srv
    try:
        yield running
    finally:
        for srv in running.values():
            srv.shutdown()
            srv.server_close()


class Rebinding:
    """A resolver that answers a public address first and 127.0.0.1 afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [PUBLIC] if self.calls == 1 else ["127.0.0.1"]


def dial_to(public_port: int) -> Any:
    def dial(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> tuple[str, int]:
        # The "public" address is the local public server; everything else is dialled as is.
        return ("127.0.0.1", public_port) if ip.compressed == PUBLIC else (ip.compressed, port)

    return dial


def test_dns_rebinding_cannot_move_the_connection(servers: dict[str, Any]) -> None:
    from routeiq.security.ssrf_http import pinned_client

    public, internal = servers["public"], servers["internal"]
    port = internal.server_address[1]  # the URL names the internal server's port...
    rebind = Rebinding()
    settings = SSRFSettings(allow_ports=[port])
    url = f"http://rebind.example:{port}/hook"
    with pinned_client(settings, resolver=rebind, dial=dial_to(public.server_address[1])) as c:
        response = c.get(url)
        # ...but the connection went to the address the check saw, with the original Host.
        assert response.text == "public /hook"
        assert public.seen == [("/hook", f"rebind.example:{port}")]
        assert rebind.calls == 1  # resolved once: no second lookup at connect time
        with pytest.raises(UnsafeURLError) as info:  # the next check sees 127.0.0.1
            c.get(url)
    assert info.value.reason == "loopback"
    assert internal.seen == []


async def test_async_client_pins_too(servers: dict[str, Any]) -> None:
    from routeiq.security.ssrf_http import pinned_async_client

    public, internal = servers["public"], servers["internal"]
    port = internal.server_address[1]
    rebind = Rebinding()
    dial = dial_to(public.server_address[1])
    async with pinned_async_client(
        SSRFSettings(allow_ports=[port]), resolver=rebind, dial=dial
    ) as c:
        response = await c.get(f"http://rebind.example:{port}/a")
        assert response.text == "public /a"
        with pytest.raises(UnsafeURLError):
            await c.get(f"http://rebind.example:{port}/b")
    assert internal.seen == [] and rebind.calls == 2


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://127.0.0.1:{internal}/admin", "port"),
        ("http://127.0.0.1/admin", "loopback"),
        ("http://[::ffff:7f00:1]:{internal}/", "loopback"),
        ("file:///etc/passwd", "scheme"),
    ],
)
def test_every_redirect_is_checked(servers: dict[str, Any], target: str, reason: str) -> None:
    from routeiq.security.ssrf_http import pinned_client

    public, internal = servers["public"], servers["internal"]
    internal_port = internal.server_address[1]
    if "{internal}" in target and reason != "port":
        settings = SSRFSettings(allow_ports=[internal_port])
    else:
        settings = SSRFSettings()
    public.redirects["/start"] = target.format(internal=internal_port)
    public.redirects["/hop"] = "/final"
    dial = dial_to(public.server_address[1])
    with pinned_client(settings, resolver=resolver, dial=dial, follow_redirects=True) as c:
        assert c.get("http://api.example.com/hop").text == "public /final"  # redirects work
        with pytest.raises(UnsafeURLError) as info:
            c.get("http://api.example.com/start")
    assert info.value.reason == reason
    assert internal.seen == []


def test_pinned_clients_refuse_their_transport_being_replaced() -> None:
    from routeiq.security.ssrf_http import pinned_client

    with pytest.raises(ValueError, match="drop proxy, transport"):
        pinned_client(SSRFSettings(), transport=None, proxy="http://p:3128")


def _tls_server(name: str) -> tuple[Any, ssl.SSLContext, list[str]]:
    crypto = pytest.importorskip("cryptography", reason="cryptography is not installed")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"routeiq-ssrf-{secrets.token_hex(4)}"
    tmp.mkdir()
    (tmp / "c.pem").write_bytes(pem)
    (tmp / "k.pem").write_bytes(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    sni: list[str] = []
    server_ctx.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)  # type: ignore[assignment,misc,arg-type]
    client_ctx = ssl.create_default_context(cadata=pem.decode())
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.socket = server_ctx.wrap_socket(srv.socket, server_side=True)
    srv.name, srv.seen, srv.redirects, srv.daemon_threads = "tls", [], {}, True
    return srv, client_ctx, sni


def test_tls_keeps_the_host_name_for_sni_and_certificate() -> None:
    from routeiq.security.ssrf_http import pinned_client

    srv, client_ctx, sni = _tls_server("api.example.com")
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        port = srv.server_address[1]
        settings = SSRFSettings(allow_ports=[port])
        with pinned_client(settings, resolver=resolver, dial=dial_to(port), verify=client_ctx) as c:
            assert c.get(f"https://api.example.com:{port}/tls").text == "tls /tls"
        # The certificate names api.example.com only: verification passed against the name,
        # and the server saw it as SNI although the socket went to a pinned address.
        assert sni == ["api.example.com"]
        assert srv.seen == [("/tls", f"api.example.com:{port}")]
    finally:
        srv.shutdown()
        srv.server_close()


# --- LiteLLM integration -----------------------------------------------------------------------


def _dep(ident: str, api_base: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": "openai/gpt-4o-mini", "api_key": "fake"}
    params["mock_response"] = "hi"
    if api_base is not None:
        params["api_base"] = api_base
    return {"model_name": "chat", "litellm_params": params, "model_info": {"id": ident}}


def test_validate_refuses_bad_deployment_urls_only_when_enabled() -> None:
    from routeiq.integrations.litellm.installer import validate
    from routeiq.serving.registry import RouterRegistry
    from routeiq.serving.settings import RouteIQConfigError
    from routeiq.serving.settings_file import parse_settings

    deps = [
        _dep("mock", None),
        _dep("meta", "http://169.254.169.254/v1"),
        _dep("local", "http://127.0.0.1:9/v1"),
        _dep("vllm", "http://10.0.0.5:8000/v1"),
    ]
    off = parse_settings({"mode": "cheapest"})
    assert validate(off, deps, RouterRegistry({})) == []  # default: nothing checked
    on = parse_settings(
        {
            "mode": "cheapest",
            "ssrf": {"enabled": True, "allow_cidrs": ["10.0.0.0/24"], "allow_ports": [8000]},
        }
    )
    with pytest.raises(RouteIQConfigError) as info:
        validate(on, iter(deps), RouterRegistry({}))
    message = str(info.value)
    assert "deployment 'openai/gpt-4o-mini' (id meta): litellm_params.api_base" in message
    assert "(metadata)" in message and "(id local)" in message and "(port)" in message
    assert "(id vllm)" not in message and "(id mock)" not in message


def test_deployment_urls_from_environment_references(monkeypatch: pytest.MonkeyPatch) -> None:
    s = SSRFSettings()
    ref = [_dep("env", "os.environ/ROUTEIQ_TEST_API_BASE")]
    monkeypatch.delenv("ROUTEIQ_TEST_API_BASE", raising=False)
    assert deployment_url_problems(ref, s) == []  # not set here: the live router is re-checked
    monkeypatch.setenv("ROUTEIQ_TEST_API_BASE", "http://[::1]:8000/")
    assert "(port)" in deployment_url_problems(ref, s)[0]
    bad_type = [{"model_name": "x", "litellm_params": {"api_base": 5}}]
    assert "not a URL string" in deployment_url_problems(bad_type, s)[0]


async def test_client_urls_refused_unless_allowed_then_checked() -> None:
    closed = SSRFSettings(enabled=True)
    assert await client_url_refusal({"model": "chat"}, closed) is None
    refusal = await client_url_refusal({"api_base": "https://api.example.com"}, closed)
    assert refusal is not None and (refusal.status, refusal.param) == (403, "api_base")
    nested = await client_url_refusal({"extra_body": {"base_url": "http://8.8.8.8"}}, closed)
    assert nested is not None and nested.param == "extra_body.base_url"
    config = await client_url_refusal({"user_config": {"model_list": []}}, closed)
    assert config is not None and config.status == 403

    open_ = SSRFSettings(enabled=True, allow_client_base_url=True)
    ok = await client_url_refusal({"api_base": "https://api.example.com/v1"}, open_, resolver)
    assert ok is None
    bad = await client_url_refusal({"base_url": "http://0x7f.1/"}, open_, resolver)
    assert bad is not None and bad.status == 400 and "(loopback)" in bad.message
    user_config = {"model_list": [_dep("u", "http://169.254.169.254/")]}
    bad = await client_url_refusal({"user_config": user_config}, open_, resolver)
    assert bad is not None and bad.status == 400 and "(metadata)" in bad.message


def _write_config(path: Path, api_base: str, **ssrf: Any) -> None:
    import yaml

    config = {
        "model_list": [_dep("d1", api_base)],
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": {"mode": "cheapest", "ssrf": {"enabled": True, **ssrf}},
    }
    path.write_text(yaml.safe_dump(config))


def _run_checker(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [sys.executable, "-m", "routeiq.integrations.litellm.proxy", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_config_checker_refuses_metadata_api_base(tmp_path: Path) -> None:
    pytest.importorskip("litellm", reason="litellm is not installed")
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    _write_config(bad, "http://169.254.169.254/")
    _write_config(good, "http://10.0.0.5:8000/v1", allow_cidrs=["10.0.0.0/24"], allow_ports=[8000])
    refused = _run_checker(bad)
    assert refused.returncode == 1, refused.stderr
    assert "RouteIQ config error" in refused.stderr
    assert "(id d1): litellm_params.api_base refused http://169.254.169.254/" in refused.stderr
    assert "(metadata)" in refused.stderr
    allowed = _run_checker(good)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["groups"] == ["chat"]


def test_check_url_command(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from routeiq.cli.check_url import check_url_command

    app = typer.Typer()
    app.command("check-url")(check_url_command)
    app.command("other")(lambda: None)  # a second command, so typer keeps the name
    run = CliRunner().invoke
    ok = run(app, ["check-url", "http://10.0.0.5:8000/", "--allow-cidr", "10.0.0.0/24",
                   "--allow-port", "8000"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "allowed" in ok.output and "10.0.0.5" in ok.output
    refused = run(app, ["check-url", "http://0177.0.0.1/"])
    assert refused.exit_code == 1 and "loopback" in refused.output
    config = tmp_path / "proxy.yaml"
    _write_config(config, "http://10.0.0.5:8000/", allow_cidrs=["10.0.0.0/24"], allow_ports=[8000])
    assert run(app, ["check-url", "http://10.0.0.5:8000/", "--config", str(config)]).exit_code == 0
    bad = run(app, ["check-url", "http://x/", "--allow-cidr", "nope"])
    assert bad.exit_code == 2 and "not an address range" in bad.output


def test_check_url_is_registered_on_the_main_cli() -> None:
    from typer.testing import CliRunner

    from routeiq.cli.main import app

    result = CliRunner().invoke(app, ["check-url", "http://[fd00:ec2::254]/"])
    assert result.exit_code == 1 and "metadata" in result.output


# --- a real proxy: client-sent api_base refused in LiteLLM's error shape -----------------------


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
    import yaml

    from proxy_helpers import free_port, proxy_env, start_proxy, stop, wait_ready

    work = tmp_path_factory.mktemp("ssrf-proxy")
    config = work / "config.yaml"
    allow = {"allow_cidrs": ["10.0.0.0/24"], "allow_ports": [8000]}
    _write_config(config, "http://10.0.0.5:8000/v1", **allow)
    data = yaml.safe_load(config.read_text())
    # LiteLLM's own check lets client api_base through with this; RouteIQ's guard must not.
    data["general_settings"] = {"allow_client_side_credentials": True}
    config.write_text(yaml.safe_dump(data))
    key, port, out = "sk-" + secrets.token_hex(16), free_port(), work / "proxy.log"
    proc = start_proxy(config, 1, out, proxy_env(key), port)
    try:
        wait_ready(proc, out, 1)
        yield {"url": f"http://127.0.0.1:{port}", "key": key}
    finally:
        stop(proc)


@pytest.mark.slow
def test_proxy_refuses_client_api_base(proxy: dict[str, Any]) -> None:
    import httpx

    def post(**extra: Any) -> httpx.Response:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}
        headers = {"Authorization": f"Bearer {proxy['key']}"}
        return httpx.post(f"{proxy['url']}/v1/chat/completions", json=body, headers=headers,
                          timeout=60)  # fmt: skip

    served = post()
    assert served.status_code == 200, served.text  # a deployment on an allowed private range
    for extra in ({"api_base": "http://169.254.169.254/"}, {"base_url": "https://api.example.com"}):
        refused = post(**extra)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        param = next(iter(extra))
        assert error["type"] == "permission_error" and error["param"] == param
        assert error["code"] == "403" and "allow_client_base_url" in error["message"]


def test_no_event_loop_blocking_in_async_check() -> None:
    from routeiq.security.ssrf import acheck_url

    gate = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        gate.wait(5)
        return [PUBLIC]

    async def main() -> bool:
        task = asyncio.ensure_future(acheck_url("http://slow.example/", SSRFSettings(), slow))
        await asyncio.sleep(0)  # the loop keeps running while the resolver waits
        ran = not task.done()
        gate.set()
        await task
        return ran

    assert asyncio.run(main())
