"""Finding the environment specs: every file becomes Dags, or an error Dag that says what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

from remote_agents.environments import environment_files

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "include" / "environments"


def test_two_files_with_the_same_environment_name_are_one_error_naming_both(tmp_path: Path) -> None:
    shutil.copy(ENVIRONMENTS / "sandbox.yaml", tmp_path / "sandbox.yaml")
    shutil.copy(ENVIRONMENTS / "sandbox.yaml", tmp_path / "sandbox-copy.yaml")
    shutil.copy(ENVIRONMENTS / "tutorial.yaml", tmp_path / "tutorial.yaml")

    found = {environment.name: environment for environment in environment_files(tmp_path)}

    assert sorted(found) == ["sandbox", "tutorial"]
    duplicate = found["sandbox"]
    assert duplicate.spec is None and duplicate.error is not None
    (problem,) = duplicate.error.problems
    assert "sandbox-copy.yaml" in problem and "sandbox.yaml" in problem and "rename" in problem
    assert found["tutorial"].spec is not None
