"""The on-prem spec end to end, beside the sandbox environment: bootstrap, health, drift, teardown.

`onprem.yaml` reaches an existing cluster through a Kubernetes Connection (its own cluster here)
and gives the agents the AWS keys of an IAM user (`identity.mode: static-credentials`), in the
same AWS account and Astro API as the sandbox environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_agents.environments import ENVIRONMENTS_VARIABLE
from remote_agents.health import contract
from remote_agents.spec import load_spec
from sandbox.environment import Sandbox, conn_env_name

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
NAME = "onprem"


@pytest.fixture(scope="module")
def onprem(sandbox: Sandbox, airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The on-prem environment beside the sandbox one, with its Connections in os.environ.

    Its spec is `onprem.yaml` with the sandbox's chart (the sandbox reaches no chart repository).
    """
    folder = tmp_path_factory.mktemp("environments")
    data = yaml.safe_load((ROOT / "include" / "environments" / f"{NAME}.yaml").read_text())
    data["chart"] = {"path": str(ROOT / "sandbox" / "chart"), "version": sandbox.spec.chart.version,
                     "rollout_timeout_seconds": 30}
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(data))
    sandbox.reset()
    environment = sandbox.beside(load_spec(folder / f"{NAME}.yaml"), tmp_path_factory.mktemp(NAME))
    saved = dict(os.environ)
    os.environ.update({**environment.env(), ENVIRONMENTS_VARIABLE: str(folder)})
    yield environment
    environment.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def dags(onprem: Sandbox) -> Any:
    """The Dags of the environments folder that holds the on-prem spec."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


def run(dagbag: Any, kind: str, **conf: Any) -> tuple[str, dict[str, str], Any]:
    """One run of the environment's `kind` Dag: its state, task states and the last task's XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_id = f"remote_agents_{kind}__{NAME}"
    result = dagbag.get_dag(dag_id).test(run_conf=conf or None)
    last = {"bootstrap": "summary", "teardown": "summary", "health": "report", "drift": "report"}[kind]
    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, run_id=result.run_id, task_id=last,
                                                 key="return_value").one_or_none()
    return result.state, {ti.task_id: ti.state for ti in result.get_task_instances()}, row and row.value


def test_bootstrap_health_drift_and_teardown_of_the_onprem_spec(onprem: Sandbox, dags: Any) -> None:
    spec = onprem.spec
    state, tasks, _ = run(dags, "bootstrap", dry_run=False, rotate_tokens=False, skip_cluster_creation=False,
                          chart_version=spec.chart.version)
    assert state == "success", tasks

    onprem.start_agents()
    os.environ[conn_env_name(spec.astro.deployment_connection_id)] = json.dumps(onprem.deployment_connection())
    with onprem.agents.client() as client:  # type: ignore[union-attr]
        client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)
    state, tasks, report = run(dags, "health")
    assert (state, report["failed_checks"]) == ("success", []), report["findings"]
    state, tasks, report = run(dags, "drift")
    assert state == "success" and report["findings"] == [], report
    onprem.stop_agents()

    state, tasks, _ = run(dags, "teardown", confirm=NAME, dry_run=False)
    assert state == "success", tasks
    assert onprem.owned_leftovers() == {"aws": [], "kubernetes": [], "astro": []}
