"""YAML loading that keeps line numbers and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; in a compliance file that
hides an edit, so a duplicate key is an error here.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import PolicyIssue

__all__ = ["Lines", "line_of", "load_yaml"]

Path = tuple[str | int, ...]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when built
Lines = dict[Path, int]


def load_yaml(text: str, file: str) -> tuple[Any, Lines, list[PolicyIssue]]:
    """Parse `text`; return the data, the line of every path, and any issues."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        return None, {}, [PolicyIssue("yaml_syntax", str(exc.problem or exc), file, line)]
    except yaml.YAMLError as exc:
        return None, {}, [PolicyIssue("yaml_syntax", str(exc), file)]
    lines: Lines = {}
    issues: list[PolicyIssue] = []
    if node is not None:
        _walk(node, (), lines, issues, file)
    return data, lines, issues


def _walk(node: yaml.Node, path: Path, lines: Lines, issues: list[PolicyIssue], file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                issues.append(
                    PolicyIssue(
                        "duplicate_key",
                        f"key {key!r} appears twice",
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
            seen.add(key)
            _walk(value_node, (*path, key), lines, issues, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, issues, file)


def line_of(lines: Lines, path: Path) -> int | None:
    """Line of `path`, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
