"""The references in docs/ are generated from the code; they must not go stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # noqa: ANN202 - the scripts/gen_docs.py module
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["spec-reference.md", "operators.md"])
def test_committed_reference_matches_the_code(name: str) -> None:
    expected = _generator().GENERATED[name]()
    assert (ROOT / "docs" / name).read_text() == expected, f"docs/{name} is stale; run: python scripts/gen_docs.py"


def test_every_operator_is_documented_with_a_usage_example() -> None:
    text = (ROOT / "docs" / "operators.md").read_text()
    for cls in _generator()._operators():
        section = text.split(f"## {cls.__name__}\n", 1)[1].split("\n## ", 1)[0]
        assert "task_id=" in section, f"{cls.__name__} has no usage example in its docstring"
