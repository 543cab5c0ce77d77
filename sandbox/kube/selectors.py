"""Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors (dotted paths)."""

from __future__ import annotations

import re
from typing import Any

SET_REQUIREMENT = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
EQUALITY_REQUIREMENT = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")


def split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside `in (a, b)` value sets."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def requirement_matches(requirement: str, labels: dict[str, str]) -> bool:
    if match := SET_REQUIREMENT.match(requirement):
        key, operator, values = match.groups()
        allowed = {v.strip() for v in values.split(",")}
        return labels.get(key) in allowed if operator == "in" else labels.get(key) not in allowed
    if match := EQUALITY_REQUIREMENT.match(requirement):
        key, operator, value = match.groups()
        return (labels.get(key) == value) == (operator != "!=")
    if requirement.startswith("!"):
        return requirement[1:].strip() not in labels
    return requirement in labels


def matches_labels(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(requirement_matches(r, labels) for r in split_requirements(selector))


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return str(node).lower()
    return "" if node is None else str(node)


def matches_fields(obj: dict[str, Any], selector: str) -> bool:
    for requirement in split_requirements(selector):
        match = EQUALITY_REQUIREMENT.match(requirement)
        if match is None:
            return False
        path, operator, value = match.groups()
        if (field_value(obj, path) == value) == (operator == "!="):
            return False
    return True
