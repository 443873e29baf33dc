# The LiteLLM proxy with RouteIQ installed. Build from the repository root:
#   docker build -f deploy/proxy.Dockerfile -t routeiq-proxy .
# The base is LiteLLM's published image at a pinned tag (the LiteLLM version RouteIQ is
# tested with); check the tag exists in ghcr.io/berriai/litellm before bumping it.
FROM ghcr.io/berriai/litellm:main-v1.108.7

COPY pyproject.toml README.md /src/routeiq/
COPY src /src/routeiq/src
# No extras: LiteLLM's image already brings litellm[proxy], aiohttp, redis, prometheus.
RUN pip install --no-cache-dir /src/routeiq && rm -rf /src/routeiq

EXPOSE 4000
# LiteLLM's image runs the proxy; the config lists RouteIQ's callback (deploy/config/proxy.yaml).
CMD ["--config", "/etc/litellm/config.yaml", "--port", "4000", "--num_workers", "2"]
