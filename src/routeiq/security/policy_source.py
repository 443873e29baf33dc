"""Reading a Cedar policy file once: parse, validate, and say on which line a problem is.

    source = load_policies(Path("policies.cedar"), Path("schema.cedarschema"))
    source.policy_set   # the parsed handle every authorization reuses
    source.name("policy1")   # -> "forbid-team-b-gpt4o" (its @id), else "policy1"

cedarpy reports errors without positions ("invalid policy condition: whn", "attribute `modle`
on entity type `Deployment` not found" for ``policy1``), so the file is split into its
statements here (at ``;`` outside strings and comments, as Cedar numbers them ``policy0``,
``policy1``, ...), a parse error is pinned to the first statement that does not parse on its
own, and the line is the first one of that statement naming the token the message quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routeiq.serving.settings import RouteIQConfigError

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|: (\S+)$")
_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


class PolicyConfigError(RouteIQConfigError):
    """A policy or schema file that cannot be read, parsed or validated (names file and line)."""


@dataclass(frozen=True)
class Statement:
    """One policy of the file: its text (from just after the previous ``;``), the line that
    text starts on, the policy's first line (1-based) and its ``@id`` if any."""

    text: str
    start_line: int
    line: int
    annotation: str | None


def split_statements(text: str) -> list[Statement]:
    """The file's policies in order (Cedar's ``policy0``, ``policy1``, ...)."""
    out: list[Statement] = []
    start, start_line, first_line, line = 0, 1, None, 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == '"':
            first_line = line if first_line is None else first_line
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";":
            body = text[start : i + 1]
            found = _ID.search(_strip_comments(body))
            annotation = found.group(1) if found else None
            out.append(Statement(body, start_line, first_line or line, annotation))
            start, start_line, first_line = i + 1, line, None
        elif not ch.isspace() and first_line is None:
            first_line = line
        i += 1
    return out


def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", text)


def _token_line(statement: Statement, message: str) -> int:
    """The line of ``statement`` that holds the token quoted in ``message`` (else its first)."""
    for match in _QUOTED.finditer(message):
        token = next(g for g in match.groups() if g)
        for offset, text in enumerate(statement.text.split("\n")):
            number = statement.start_line + offset
            pattern = rf"(?<![\w]){re.escape(token)}(?![\w])"
            if number >= statement.line and re.search(pattern, _strip_comments(text)):
                return number
    return statement.line


@dataclass(frozen=True)
class PolicySource:
    """A parsed (and, with a schema, validated) policy file."""

    path: Path
    policy_set: Any  # cedarpy.PolicySet
    statements: tuple[Statement, ...]
    schema: Any = None  # cedarpy.Schema
    names: dict[str, str] = field(default_factory=dict)  # policyN -> @id

    def name(self, policy_id: str) -> str:
        """The policy's ``@id`` annotation, else Cedar's positional id."""
        return self.names.get(policy_id) or policy_id

    def line(self, policy_id: str) -> int | None:
        index = policy_id.removeprefix("policy")
        if index.isdigit() and int(index) < len(self.statements):
            return self.statements[int(index)].line
        return None


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyConfigError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyConfigError(f"cannot read {what} {path}: {exc}") from None


def _parse_error(path: Path, statements: list[Statement], message: str) -> PolicyConfigError:
    from cedarpy import PolicySet

    for statement in statements:
        try:
            PolicySet.from_str(statement.text)
        except ValueError as exc:
            line = _token_line(statement, str(exc))
            return PolicyConfigError(f"{path}:{line}: Cedar syntax error: {exc}")
    return PolicyConfigError(f"{path}: Cedar syntax error: {message}")


def load_schema(path: Path) -> Any:
    """A parsed Cedar schema (``.json``: the JSON schema format, else Cedar's syntax)."""
    from cedarpy import Schema

    text = _read(path, "Cedar schema")
    try:
        if path.suffix == ".json":
            return Schema.from_json_str(text)
        return Schema.from_str(text)
    except ValueError as exc:
        raise PolicyConfigError(f"{path}: invalid Cedar schema: {exc}") from None


def load_policies(path: Path, schema_path: Path | None = None) -> PolicySource:
    """Parse ``path`` once (and validate it against ``schema_path``); raise
    :class:`PolicyConfigError` naming the file and line of the first problem."""
    from cedarpy import PolicySet, validate_policies

    text = _read(path, "Cedar policy file")
    statements = split_statements(text)
    try:
        policy_set = PolicySet.from_str(text)
    except ValueError as exc:
        raise _parse_error(path, statements, str(exc)) from None
    if len(policy_set) == 0:
        raise PolicyConfigError(
            f"{path}: no policies (every request would be denied); add at least one permit"
        )
    if len(policy_set) != len(statements):  # templates or a split we got wrong: no lines
        statements = []
    names = {f"policy{i}": s.annotation for i, s in enumerate(statements) if s.annotation}
    seen: dict[str, int] = {}
    for s in statements:
        if s.annotation and s.annotation in seen:
            raise PolicyConfigError(
                f"{path}:{s.line}: @id({s.annotation!r}) is already used on line "
                f"{seen[s.annotation]} (ids name the deciding policy: keep them unique)"
            )
        if s.annotation:
            seen[s.annotation] = s.line
    schema = None
    if schema_path is not None:
        schema = load_schema(schema_path)
        result = validate_policies(text, schema)
        if not result.validation_passed:
            problems = []
            for err in result.errors:
                where = str(path)
                index = err.policy_id.removeprefix("policy")
                if index.isdigit() and int(index) < len(statements):
                    where += f":{_token_line(statements[int(index)], err.error)}"
                label = names.get(err.policy_id) or err.policy_id
                problems.append(f"  {where}: policy {label}: {err.error}")
            listed = "\n".join(problems)
            raise PolicyConfigError(
                f"Cedar policies do not validate against schema {schema_path}:\n{listed}"
            )
    return PolicySource(path, policy_set, tuple(statements), schema, names)
