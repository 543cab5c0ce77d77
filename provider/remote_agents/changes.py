"""What an operator did (or, in a dry run, would do) to one resource, in a shape fit for XCom.

Every converging operator reads what exists, compares it with the desired state and applies only the
difference. It reports one ``Change`` per resource: ``created`` / ``updated`` / ``unchanged`` /
``deleted`` / ``absent``; in a dry run the same verbs prefixed by the plan (``create`` …). Diffs hold
field paths with old and new values, secret values replaced by ``REDACTED``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

REDACTED = "***REDACTED***"


class Action(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"
    DRIFTED = "drifted"  # differs from the spec, reported but deliberately not changed

    def planned(self) -> str:
        """The dry-run word: what would happen."""
        return {
            Action.CREATED: "create",
            Action.UPDATED: "update",
            Action.DELETED: "delete",
        }.get(self, self.value)

    @property
    def mutates(self) -> bool:
        return self in (Action.CREATED, Action.UPDATED, Action.DELETED)


@dataclass(frozen=True)
class Change:
    """One resource's outcome. ``resource`` reads like ``iam:role/name`` or ``k8s:Secret/ns/name``."""

    resource: str
    action: Action
    diff: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "action": self.action.planned() if self.dry_run else self.action.value,
            "diff": self.diff,
            "dry_run": self.dry_run,
        }


def diff_values(
    current: Any, desired: Any, secret_paths: frozenset[str] = frozenset(), _path: str = ""
) -> dict[str, dict[str, Any]]:
    """Field-by-field difference of two JSON-like values: ``{path: {"from": old, "to": new}}``.

    Paths in ``secret_paths`` (dotted, e.g. ``data.token``) are compared but their values redacted.
    """
    if isinstance(current, dict) and isinstance(desired, dict):
        out: dict[str, dict[str, Any]] = {}
        for key in sorted(set(current) | set(desired), key=str):
            child = f"{_path}.{key}" if _path else str(key)
            out.update(diff_values(current.get(key), desired.get(key), secret_paths, child))
        return out
    if current == desired:
        return {}
    if _path in secret_paths:
        return {_path: {"from": None if current is None else REDACTED, "to": None if desired is None else REDACTED}}
    return {_path: {"from": current, "to": desired}}
