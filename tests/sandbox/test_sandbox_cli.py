"""`python -m sandbox up|status|down`: background sandboxes that start, coexist and leave nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sandbox_cli(state_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REMOTE_AGENTS_SANDBOX_DIR": str(state_root)}
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname, parts.port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def two_sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, object]]]]:
    root = tmp_path_factory.mktemp("sandboxes")
    states = []
    for name in ("first", "second"):
        result = sandbox_cli(root, "up", "--name", name)
        assert result.returncode == 0, result.stderr
        states.append(json.loads((root / name / "state.json").read_text()))
    yield root, states
    for name in ("first", "second"):
        sandbox_cli(root, "down", "--name", name)


def test_two_sandboxes_run_side_by_side_on_their_own_ports(two_sandboxes: tuple[Path, list[dict[str, object]]]) -> None:
    _, (first, second) = two_sandboxes
    for part in ("aws", "kubernetes", "astro"):
        assert first[part] != second[part]
        assert listening(str(first[part])) and listening(str(second[part]))


def test_status_reports_every_emulator_reachable(two_sandboxes: tuple[Path, list[dict[str, object]]]) -> None:
    root, _ = two_sandboxes
    result = sandbox_cli(root, "status", "--name", "first")
    assert result.returncode == 0
    assert [line.split()[-1] for line in result.stdout.splitlines()[:3]] == ["200", "200", "200"]


def test_env_file_points_clients_at_the_sandbox(two_sandboxes: tuple[Path, list[dict[str, object]]]) -> None:
    root, (first, _) = two_sandboxes
    env_file = root / "first" / "env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    result = subprocess.run(
        ["bash", "-c", f"source {env_file} && kubectl get namespaces -o name && helm list -A"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout
    assert str(first["aws"]) in env_file.read_text()


def test_down_leaves_no_process_no_port_and_no_state(tmp_path: Path) -> None:
    assert sandbox_cli(tmp_path, "up", "--name", "short").returncode == 0
    state = json.loads((tmp_path / "short" / "state.json").read_text())

    result = sandbox_cli(tmp_path, "down", "--name", "short")

    assert result.returncode == 0
    assert not pid_alive(int(state["pid"]))
    assert not any(listening(str(state[part])) for part in ("aws", "kubernetes", "astro"))
    assert not (tmp_path / "short").exists()
    assert sandbox_cli(tmp_path, "status", "--name", "short").returncode == 1
