"""Two environments side by side: one AWS account, the same region and secrets prefixes, one EKS cluster.

`sandbox` creates the cluster; `sandbox-b` adopts it (same `cluster.name`) with its own namespace,
node group, role, buckets and Remote Execution Deployment. Each environment's health checks use
their own canary, and a teardown keeps what the other environment still uses.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_agents import naming
from remote_agents.environments import ENVIRONMENTS_VARIABLE
from remote_agents.health import contract
from remote_agents.spec import EnvironmentSpec, load_spec
from sandbox.environment import Sandbox, conn_env_name

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
OTHER = "sandbox-b"


def other_spec(folder: Path) -> Path:
    data = yaml.safe_load((ROOT / "include" / "environments" / "sandbox.yaml").read_text())
    data["name"] = OTHER
    data["namespace"] = "astro-agents-b"
    data["astro"].update(deployment_id="sandbox-b-deployment", deployment_connection_id="astro_deployment_b")
    data["cluster"]["node_groups"] = [{"name": "workers-b", "instance_types": ["m5.large"]}]
    data["backends"]["xcom"]["bucket"], data["backends"]["logs"]["bucket"] = "sandbox-b-xcom", "sandbox-b-logs"
    data["identity"] = {"mode": "irsa", "role_name": "sandbox-b-remote-agents"}
    path = folder / f"{OTHER}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("environments")
    shutil.copy(ROOT / "include" / "environments" / "sandbox.yaml", folder)
    other_spec(folder)
    return folder


@pytest.fixture(scope="module")
def pair(sandbox: Sandbox, airflow_db: None, folder: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Sandbox]]:
    sandbox.reset()
    other = sandbox.beside(load_spec(folder / f"{OTHER}.yaml"), tmp_path_factory.mktemp(OTHER))
    saved = dict(os.environ)
    os.environ.update({**other.env(), ENVIRONMENTS_VARIABLE: str(folder)})
    yield sandbox, other
    sandbox.stop_agents()
    other.stop()
    os.environ.clear()
    os.environ.update(saved)


def parse(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    os.environ[ENVIRONMENTS_VARIABLE] = str(folder)
    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


def run(dags: Any, kind: str, name: str, **conf: Any) -> tuple[str, dict[str, str], Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_id = f"remote_agents_{kind}__{name}"
    result = dags.get_dag(dag_id).test(run_conf=conf or None)
    last = "report" if kind in ("health", "drift") else "summary"
    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, run_id=result.run_id, task_id=last,
                                                 key="return_value").one_or_none()
    return result.state, {ti.task_id: ti.state for ti in result.get_task_instances()}, row and row.value


def bootstrap(dags: Any, spec: EnvironmentSpec) -> None:
    state, tasks, _ = run(dags, "bootstrap", spec.name, dry_run=False, rotate_tokens=False,
                          skip_cluster_creation=False, chart_version=spec.chart.version)
    assert state == "success", tasks


def start_agents(environment: Sandbox) -> None:
    environment.start_agents()
    conn = environment.spec.astro.deployment_connection_id
    os.environ[conn_env_name(conn)] = json.dumps(environment.deployment_connection())
    with environment.agents.client() as client:  # type: ignore[union-attr]
        client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)


def assert_healthy(dags: Any, spec: EnvironmentSpec) -> None:
    state, _, report = run(dags, "health", spec.name)
    assert (state, report["failed_checks"]) == ("success", []), report["findings"]


def test_two_environments_on_one_cluster_stay_apart_and_tear_down_in_turn(
        pair: tuple[Sandbox, Sandbox], folder: Path) -> None:
    first, second = pair
    dags = parse(folder)
    bootstrap(dags, first.spec)
    bootstrap(dags, second.spec)
    start_agents(first)
    start_agents(second)

    assert_healthy(dags, first.spec)
    assert_healthy(dags, second.spec)
    secrets_manager = first.aws.admin_client("secretsmanager")
    canaries = {*naming.canary_secret_names(first.spec).values(), *naming.canary_secret_names(second.spec).values()}
    assert len(canaries) == 4
    assert canaries <= {s["Name"] for s in secrets_manager.list_secrets()["SecretList"]}

    first.stop_agents()
    state, tasks, summary = run(dags, "teardown", first.spec.name, confirm=first.spec.name, dry_run=False)
    assert state == "success", tasks
    assert first.spec.eks is not None
    assert summary["facts"]["kept: eks:cluster/remote-agents-sandbox"] == "still used by sandbox-b"
    assert first.aws.admin_client("eks").list_clusters()["clusters"] == [first.spec.eks.name]
    assert len(first.aws.admin_client("iam").list_open_id_connect_providers()["OpenIDConnectProviderList"]) == 1
    assert_healthy(dags, second.spec)  # its agents still run, and still assume their role through the provider

    second.stop_agents()
    state, tasks, _ = run(dags, "teardown", second.spec.name, confirm=second.spec.name, dry_run=False)
    assert state == "success", tasks
    assert second.owned_leftovers() == {"aws": [], "kubernetes": [], "astro": []}

    (folder / f"{OTHER}.yaml").unlink()  # the other environment is gone: nothing is kept for it any more
    state, tasks, _ = run(parse(folder), "teardown", first.spec.name, confirm=first.spec.name, dry_run=False)
    assert state == "success", tasks
    assert first.owned_leftovers() == {"aws": [], "kubernetes": [], "astro": []}
