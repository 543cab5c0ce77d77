"""`remote-agents plan`: the bootstrap Dag's dry run, as a command, against the sandbox.

The command runs as its own process, as a user runs it: it reads the sandbox's Connections from the
AIRFLOW_CONN_* variables the `sandbox` fixture put in this process's environment, and configures its
own throw-away Airflow. Two plans and one bootstrap: about 35 s.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "include" / "environments" / "sandbox.yaml"
CONSOLE_SCRIPT = Path(sys.executable).parent / "remote-agents"
BOOTSTRAP = "remote_agents_bootstrap__sandbox"


def plan(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE_SCRIPT), "plan", str(SPEC), *options],
                          capture_output=True, text=True, timeout=120, check=False)


def bootstrap(dagbag: Any, sandbox: Sandbox) -> str:
    conf = {"dry_run": False, "rotate_tokens": False, "force_upgrade": False, "skip_cluster_creation": False,
            "chart_version": sandbox.spec.chart.version}
    return str(dagbag.get_dag(BOOTSTRAP).test(run_conf=conf).state)


def secret_value(sandbox: Sandbox, name: str, key: str) -> str:
    secret = sandbox.kube.get_object("Secret", name, sandbox.spec.namespace)
    assert secret is not None, f"Secret {name} is missing"
    return base64.b64decode(secret["data"][key]).decode()


def test_plan_on_a_fresh_sandbox_lists_what_it_would_create_and_mutates_nothing(sandbox: Sandbox) -> None:
    sandbox.reset()

    result = plan()

    assert result.returncode == 0, result.stderr
    assert sandbox.mutating_calls() == {"aws": [], "kubernetes": [], "astro": []}
    table = result.stdout
    assert table.startswith("# Bootstrap plan (dry run: nothing was changed) of environment `sandbox`\n")
    for resource in ("eks:cluster/remote-agents-sandbox", "iam:role/sandbox-remote-agents", "k8s:Namespace/astro-agents",
                     "k8s:Secret/astro-agents/astro-agent-token", "helm:release/astro-agents/astro-agent"):
        assert f"`{resource}` | create" in table, resource
    assert "| unchanged |" not in table
    assert "[info" not in table and "[DAG TEST]" not in table  # Airflow's own logs stay out of the output


def test_plan_after_a_bootstrap_shows_every_resource_unchanged(dagbag: Any, sandbox: Sandbox) -> None:
    sandbox.reset()
    assert bootstrap(dagbag, sandbox) == "success"
    sandbox.forget_calls()

    result = plan("--output", "json")

    assert result.returncode == 0, result.stderr
    assert sandbox.mutating_calls() == {"aws": [], "kubernetes": [], "astro": []}
    report = json.loads(result.stdout)
    assert (report["outcome"], report["dry_run"], report["failures"]) == ("planned", True, [])
    assert list(report["counts"]) == ["unchanged"] and report["counts"]["unchanged"] >= 20
    assert {r["action"] for r in report["resources"]} == {"unchanged"}
    token = secret_value(sandbox, sandbox.spec.astro.agent_token_secret_name, "token")
    assert token not in result.stdout and token not in result.stderr
