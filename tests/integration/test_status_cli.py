"""`remote-agents status` against a real Airflow 3 REST API: the sandbox's stand-in Airflow, running Dags
that carry the environment Dags' ids and push what they push (the bootstrap summary's report, each
check's findings, the token expiry, a drift report), built by the same functions.

Why not the environment Dags themselves: they need the whole sandbox (moto, the Kubernetes emulator,
helm, Astro) reachable from the stand-in's workers, minutes for a bootstrap and a health run; what
the reader depends on is the REST API's answers for runs, task instances and XComs, which these prove.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_agents.cli import main
from sandbox.standin import AgentStandIn

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP, HEALTH, DRIFT = "remote_agents_bootstrap__sandbox", "remote_agents_health__sandbox", "remote_agents_drift__sandbox"
RUN_TIMEOUT = 30.0

RECORDED_DAGS = '''
from datetime import UTC, datetime

from airflow.sdk import DAG, task

from remote_agents.health.checks import fail_on
from remote_agents.health.diagnose import CHECKS, TOKENS_KEY, Finding
from remote_agents.summary import build_report

START = datetime(2025, 1, 1, tzinfo=UTC)

with DAG("remote_agents_bootstrap__sandbox", schedule=None, start_date=START, catchup=False):

    @task
    def summary(dag_run=None):
        dry_run = bool(dag_run.conf.get("dry_run"))
        changes = [{"resource": "k8s:Namespace/agents", "action": "create" if dry_run else "created"},
                   {"resource": "helm:release/agents/astro-agent", "action": "unchanged"}]
        return build_report(kind="bootstrap", environment="sandbox", dry_run=dry_run, results={"t": {"changes": changes}},
                            states={}, failures={}, facts={"chart_version": "9.9.9"}, next_step="-")

    summary()

with DAG("remote_agents_health__sandbox", schedule=None, start_date=START, catchup=False):

    def check(name):
        @task(task_id=f"check_{name}")
        def run_check(ti=None):
            import logging

            if name == "agent_token":
                ti.xcom_push(key=TOKENS_KEY, value=[{"kind": "agent token", "live": True, "expires_at": None}])
            findings = [Finding("xcom", "XCom backend", "access denied on s3://b/xcom/", "403 PutObject",
                                "re-run the bootstrap")] if name == "xcom" else []
            return fail_on(findings, ti, logging.getLogger(__name__), f"check_{name}")

        return run_check()

    [check(name) for name in CHECKS]
'''


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStandIn]:
    """The stand-in Airflow with a bootstrap, a dry-run bootstrap and a health run of `sandbox` done."""
    state = tmp_path_factory.mktemp("status-airflow")
    dags = state / "dags"
    dags.mkdir()
    (dags / "recorded_environment_dags.py").write_text(textwrap.dedent(RECORDED_DAGS))
    values = {"xcomBackend": "airflow.sdk.execution_time.xcom.BaseXCom", "secretBackend": "",
              "workers": [{"name": "default", "queues": "default"}]}
    # The worktree's provider, not whichever one the virtualenv's editable install points at.
    extra = {"PYTHONPATH": f"{ROOT}:{ROOT / 'provider'}"}
    with AgentStandIn(state, dags, values, aws_env={}, extra_env=extra, parallelism=4) as standin:
        with standin.client() as client:
            for dag_id in (BOOTSTRAP, HEALTH):
                client.wait_for_dag(dag_id, timeout=30)
            runs = [(BOOTSTRAP, client.trigger(BOOTSTRAP, {"dry_run": False})),
                    (HEALTH, client.trigger(HEALTH))]
            runs.append((BOOTSTRAP, client.trigger(BOOTSTRAP, {"dry_run": True})))  # newer than the applied run
            states = {run_id: client.wait(dag_id, run_id, RUN_TIMEOUT) for dag_id, run_id in runs}
        assert list(states.values()) == ["success", "failed", "success"], states
        yield standin


@pytest.fixture()
def spec_folder(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "include" / "environments" / "sandbox.yaml", tmp_path)
    shutil.copy(ROOT / "include" / "environments" / "tutorial.yaml", tmp_path)  # no Dag of it runs there
    (tmp_path / "bad.yaml").write_text("name: bad\nnamepsace: x\n")
    return tmp_path


def test_status_json_from_the_rest_api(airflow: AgentStandIn, spec_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = airflow.api_token()

    code = main(["status", "--spec-folder", str(spec_folder), "--url", airflow.url, "--token", token, "--output", "json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert token not in out + err
    statuses = {status["name"]: status for status in json.loads(out)}
    assert set(statuses) == {"sandbox", "tutorial", "bad"}
    assert statuses["bad"]["error"] and statuses["tutorial"]["never_bootstrapped"]
    sandbox = statuses["sandbox"]
    assert sandbox["bootstrap"]["state"] == "success" and sandbox["bootstrap"]["counts"] == {"created": 1, "unchanged": 1}
    assert sandbox["last_plan"]["dry_run"] and sandbox["chart_version_installed"] == "9.9.9"
    cells = {cell["check"]: cell for cell in sandbox["health"]["checks"]}
    assert cells["xcom"]["status"] == "red" and "access denied on s3://b/xcom/" in cells["xcom"]["findings"][0]
    assert {check for check, cell in cells.items() if cell["status"] != "green"} == {"xcom"}
    assert sandbox["tokens"] == [{"kind": "agent token", "days_left": None, "live": True}]
    assert sandbox["drift"] is None  # no drift Dag there


def test_status_text_and_a_refused_token(airflow: AgentStandIn, spec_folder: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--spec-folder", str(spec_folder), "--url", airflow.url, "--token", airflow.api_token()]) == 0
    table = capsys.readouterr().out
    assert "xcom FAILED" in table and "never bootstrapped" in table and "invalid spec bad.yaml" in table

    assert main(["status", "--spec-folder", str(spec_folder), "--url", airflow.url, "--token", "not-a-jwt"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "token was refused" in err and "not-a-jwt" not in err
