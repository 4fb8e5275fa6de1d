"""Pin the policy digest in compliance.yaml: one line, edited as text.

compliance.yaml is written by people, with comments that explain each
threshold; a YAML round trip would drop them and reorder keys. So the pin
replaces the value of the top-level `policy_digest:` line, or inserts that line
after `expires:` (else after `version:`, else at the end), and leaves every
other byte alone. The result is parsed again and must hold the new pin and
otherwise the same data, or nothing is written.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ApexError
from ..policy._yaml import load_yaml

__all__ = ["PinError", "pin_policy_digest"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# a top-level `policy_digest:` line with a plain or quoted scalar and an optional comment
_PIN_LINE = re.compile(
    r"^policy_digest[ \t]*:[ \t]*"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s#>|\[{&*!][^\n#]*?)?"
    r"(?P<rest>[ \t]*(?:#[^\r\n]*)?)(?P<eol>\r?\n?)$"
)
_PIN_KEY = re.compile(r"^policy_digest[ \t]*:")
_ANCHORS = ("expires", "version")
_COMMENT = "  # the rule files it approves (apex-oms compliance pin)"


class PinError(ApexError, ValueError):
    """compliance.yaml cannot be pinned by a one-line edit; the message says why."""

    code = "pin_failed"


def pin_policy_digest(yaml_bytes: bytes, digest: str) -> bytes:
    """compliance.yaml with `policy_digest` set to `digest`; unchanged bytes when it
    already is."""
    if not _DIGEST.match(digest):
        raise PinError(f"not a policy digest (want: sha256:<64 hex>, got: {digest!r})")
    try:
        text = yaml_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PinError(f"compliance.yaml is not UTF-8: {exc}") from exc
    before = _parse(text)
    if before.get("policy_digest") == digest:
        return yaml_bytes
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if _PIN_KEY.match(line)]
    if len(found) > 1:
        raise PinError("compliance.yaml has more than one policy_digest line")
    if found:
        match = _PIN_LINE.match(lines[found[0]])
        if match is None:
            raise PinError(
                f"line {found[0] + 1}: policy_digest is not a one-line value; "
                f'write it as `policy_digest: "sha256:..."`'
            )
        lines[found[0]] = f'policy_digest: "{digest}"{match["rest"]}{match["eol"]}'
    else:
        newline = "\r\n" if text.endswith("\r\n") or "\r\n" in text else "\n"
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        lines.insert(_insert_at(lines), f'policy_digest: "{digest}"{_COMMENT}{newline}')
    result = "".join(lines)
    try:
        after = _parse(result)
    except PinError:
        after = None
    if after != {**before, "policy_digest": digest}:
        # the edit changed more than the pin (an unusual layout): write nothing
        raise PinError("pinning would change more than the policy_digest line; edit it by hand")
    return result.encode("utf-8")


def _parse(text: str) -> dict[str, Any]:
    data, _, issues = load_yaml(text, "compliance.yaml")
    if issues:
        first = issues[0]
        where = f"line {first.line}: " if first.line else ""
        raise PinError(f"compliance.yaml: {where}{first.message}")
    if not isinstance(data, dict):
        raise PinError("compliance.yaml is not a mapping")
    return data


def _insert_at(lines: list[str]) -> int:
    """After the first one-line `expires:` (else `version:`) at the top level, else
    at the end."""
    for key in _ANCHORS:
        for index, line in enumerate(lines):
            if re.match(rf"^{key}[ \t]*:[ \t]*[^\s#|>]", line):
                return index + 1
    return len(lines)
