"""The example Dags in include/examples/: they parse, and each does what it says against a bootstrapped sandbox."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remote_agents import naming
from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "include" / "examples"
BOOTSTRAP = "remote_agents_bootstrap__sandbox"


# dag.test() runs only Dags it finds in a configured Dag bundle; the examples get a bundle of their
# own beside the default dags-folder one, for this module only (the Deployment never configures it).
BUNDLES = [
    {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
    {"name": "examples", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {"path": str(EXAMPLES), "refresh_interval": 0}},
]


@pytest.fixture(scope="module")
def examples(airflow_db: None) -> Iterator[Any]:
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(BUNDLES))
        yield DagBag(str(EXAMPLES))


@pytest.fixture(scope="module")
def bootstrapped(sandbox: Sandbox, dagbag: Any) -> Iterator[Sandbox]:
    sandbox.reset()
    run = dagbag.get_dag(BOOTSTRAP).test(run_conf={"dry_run": False, "rotate_tokens": False, "force_upgrade": False,
                                                   "skip_cluster_creation": False, "chart_version": sandbox.spec.chart.version})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    yield sandbox


def run_example(examples: Any, dag_id: str) -> None:
    run = examples.get_dag(dag_id).test()
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}


def agent_token(sandbox: Sandbox) -> str:
    secret = sandbox.kube.get_object("Secret", sandbox.spec.astro.agent_token_secret_name, sandbox.spec.namespace)
    assert secret is not None
    return base64.b64decode(secret["data"]["token"]).decode()


def helm_release(sandbox: Sandbox, name: str) -> dict[str, Any]:
    listed = subprocess.run(["helm", "list", "-n", sandbox.spec.namespace, "--filter", f"^{name}$", "-o", "json"],
                            env={**sandbox.env(), "PATH": str(ROOT / ".tools" / "bin")}, capture_output=True, text=True, check=True)
    (release,) = json.loads(listed.stdout)
    return dict(release)


def test_examples_parse_without_import_errors(examples: Any) -> None:
    assert examples.import_errors == {}
    assert set(examples.dag_ids) == {
        "example_rotate_agent_token__sandbox", "example_add_worker_queue__sandbox", "example_second_chart__sandbox",
    }


def test_examples_are_not_in_the_dags_folder(dagbag: Any) -> None:
    assert not any(dag_id.startswith("example_") for dag_id in dagbag.dag_ids)


def test_rotate_agent_token_puts_a_new_live_token_in_the_secret_and_revokes_the_old(examples: Any, bootstrapped: Sandbox) -> None:
    old = agent_token(bootstrapped)

    run_example(examples, "example_rotate_agent_token__sandbox")

    new = agent_token(bootstrapped)
    assert new != old
    assert bootstrapped.astro.is_live_agent_token(new)
    assert not bootstrapped.astro.is_live_agent_token(old)
    assert len(bootstrapped.astro.revoked_tokens) == 1


def test_add_worker_queue_creates_the_worker_deployment_trusted_by_the_irsa_role(examples: Any, bootstrapped: Sandbox) -> None:
    spec = bootstrapped.spec
    worker = f"{spec.resource_name_prefix}-worker-reports"

    run_example(examples, "example_add_worker_queue__sandbox")

    deployment = bootstrapped.kube.get_object("Deployment", worker, spec.namespace)
    assert deployment is not None
    role = bootstrapped.aws.admin_client("iam").get_role(RoleName=naming.irsa_role_names(spec)[None])["Role"]
    (condition,) = [s["Condition"]["StringEquals"] for s in role["AssumeRolePolicyDocument"]["Statement"]]
    subjects = next(v for k, v in condition.items() if k.endswith(":sub"))
    assert f"system:serviceaccount:{spec.namespace}:{worker}" in subjects


def test_second_chart_is_deployed_next_to_the_agents(examples: Any, bootstrapped: Sandbox) -> None:
    run_example(examples, "example_second_chart__sandbox")

    release = helm_release(bootstrapped, "hello")
    assert release["status"] == "deployed" and release["chart"] == "hello-0.1.0"
    assert bootstrapped.kube.get_object("Deployment", "hello", bootstrapped.spec.namespace) is not None
    assert helm_release(bootstrapped, bootstrapped.spec.release_name)["status"] == "deployed"
