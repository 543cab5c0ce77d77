"""The management image: lint-clean, on the Python the constraints were compiled for, and the
provider builds into a wheel that installs on its own (no Docker engine here to build the image)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout


def test_base_image_python_matches_the_constraints() -> None:
    image = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert image, "Dockerfile has no FROM line"
    image_python = re.search(r"python-(\d+\.\d+)$", image.group(1))
    constraints_python = re.search(r"^# python-version: (\d+\.\d+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert image_python and constraints_python
    assert image_python.group(1) == constraints_python.group(1)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # deny everything, then allow exactly what the image copies
    for copied in re.findall(r"^COPY \S+ (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M):
        for source in copied.split():
            assert f"!{source}" in ignored or f"!{source}/" in ignored, f"{source} is copied but ignored"


def test_the_image_holds_no_self_test_dag_and_no_sandbox_spec() -> None:
    import pathspec

    # Docker's rules: the last matching line wins, "!" re-includes (gitignore patterns read them alike).
    ignore = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".dockerignore").read_text().splitlines())
    files = [str(p.relative_to(ROOT)) for folder in ("dags", "include") for p in (ROOT / folder).rglob("*") if p.is_file()]
    shipped = {f for f in files if not ignore.match_file(f) and "__pycache__" not in f}

    assert "dags/remote_agents_bootstrap.py" in shipped and "include/environments/tutorial.yaml" in shipped
    assert "dags/remote_agents_selftest.py" not in shipped and "include/environments/sandbox.yaml" not in shipped


def test_wheel_builds_and_installs_without_dependencies(tmp_path: Path) -> None:
    subprocess.run([str(BIN / "uv"), "build", "--wheel", "--out-dir", str(tmp_path), "-q"], cwd=ROOT, check=True)
    (wheel,) = tmp_path.glob("airflow_provider_remote_agents-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "remote_agents/spec.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "remote_agents:get_provider_info" in entry_points and "remote-agents = remote_agents.cli:main" in entry_points

    target = tmp_path / "site"
    subprocess.run([str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    imported = subprocess.run(
        [sys.executable, "-c", "import remote_agents; print(remote_agents.__file__)"],
        env={"PYTHONPATH": str(target)}, capture_output=True, text=True, check=True,
    )
    assert imported.stdout.startswith(str(target))
    check = subprocess.run([str(BIN / "uv"), "pip", "check", "--python", sys.executable], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
