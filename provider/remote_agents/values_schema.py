"""Checking rendered Helm values against the agent chart's JSON schema (include/schemas/).

A valid spec can still render values a chart version refuses (the spec's rules follow the schema
in include/schemas/, another chart version may be stricter); helm would refuse them at install
time, after the cluster was made. The CLI
checks them first, as helm does: JSON Schema draft 2020-12.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_values_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def values_schema_problems(values: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """One line per schema error, each led by the values path it is at (``values.workers[0].queues``)."""
    # Imported here: only `validate` pays for jsonschema, not `render`.
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(values), key=lambda e: _values_path(e.absolute_path))
    return [
        f"{_values_path(error.absolute_path)}: {error.message}; the agent chart's values schema refuses what this "
        "spec renders there, change the spec field that sets it"
        for error in errors
    ]


def _values_path(path: Any) -> str:
    return "values" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
