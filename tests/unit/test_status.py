"""The status model, built from recorded Dag runs, task states and XComs as Airflow's REST API returns them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from remote_agents.environments import EnvironmentFile, environment_files
from remote_agents.health.diagnose import Finding
from remote_agents.status import EnvironmentData, RunData, build_status, status_to_dict
from remote_agents.summary import build_report

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
CHECK_TASKS = ["check_workloads", "check_agent_token", "check_deployment_api", "check_queues", "check_xcom",
               "check_secrets", "check_logs", "check_identity", "check_state_store", "check_deferral"]


@pytest.fixture(scope="module")
def sandbox_env() -> EnvironmentFile:
    (environment,) = [e for e in environment_files(ROOT / "include" / "environments") if e.name == "sandbox"]
    return environment


def dag_run(run_id: str, state: str, start: str, end: str | None, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Dag run as GET /api/v2/dags/{dag_id}/dagRuns lists it (the fields the model reads, and a few more)."""
    return {"dag_run_id": run_id, "state": state, "start_date": start, "end_date": end, "run_after": start,
            "run_type": "manual", "logical_date": None, "conf": conf or {}}


def summary(dry_run: bool, chart_version: str | None = "0.4.0", failures: dict[str, str] | None = None) -> dict[str, Any]:
    action = "create" if dry_run else "created"
    results = {"ensure_namespace": {"changes": [{"resource": "k8s:Namespace/agents", "action": action}]},
               "ensure_values": {"changes": [{"resource": "helm:values", "action": "updated" if not dry_run else "update"}]},
               "ensure_irsa": [{"changes": [{"resource": f"iam:role/r{i}", "action": "unchanged"}]} for i in range(3)]}
    return build_report(kind="bootstrap", environment="sandbox", dry_run=dry_run, results=results, states={},
                        failures=failures or {}, facts={"chart_version": chart_version}, next_step="nothing")


def bootstrap_run(run_id: str, dry_run: bool, start: str = "2025-06-09T10:00:00Z",
                  end: str = "2025-06-09T10:03:30Z") -> RunData:
    return RunData(dag_run(run_id, "success", start, end, {"dry_run": dry_run}), {"summary": "success"},
                   {("summary", "return_value"): summary(dry_run)})


def health_run(findings: dict[str, list[dict[str, str]] | None], tokens: list[dict[str, Any]] | None = None) -> RunData:
    """A finished health run: each check task's pushed findings (None: it pushed none, it crashed)."""
    states = {task: "success" if findings.get(task) == [] else "failed" for task in CHECK_TASKS}
    xcoms: dict[tuple[str, str], Any] = {(task, "findings"): value for task, value in findings.items() if value is not None}
    if tokens is not None:
        xcoms[("check_agent_token", "tokens")] = tokens
    return RunData(dag_run("scheduled__2025-06-10T11:30", "failed", "2025-06-10T11:30:00Z", "2025-06-10T11:31:10Z"),
                   states, xcoms)


def healthy(**overrides: list[dict[str, str]] | None) -> dict[str, list[dict[str, str]] | None]:
    return {task: [] for task in CHECK_TASKS} | {f"check_{check}": value for check, value in overrides.items()}


def test_an_invalid_spec_shows_its_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nnamepsace: x\n")
    (environment,) = environment_files(tmp_path)

    status = build_status(environment, None, NOW)

    assert status.name == "bad" and status.spec_file == "bad.yaml"
    assert status.error and any("namepsace" in problem for problem in status.error)
    assert status.bootstrap is None and status.health is None and status.chart_version_spec is None


def test_a_never_run_environment_says_so(sandbox_env: EnvironmentFile) -> None:
    status = build_status(sandbox_env, EnvironmentData(bootstrap_runs=[], health=None, drift=None), NOW)

    assert status.error is None
    assert status.never_bootstrapped
    assert status.bootstrap is None and status.last_plan is None and status.health is None and status.drift is None
    assert status.chart_version_spec == sandbox_env.spec.chart.version and status.chart_version_installed is None
    assert [cell for cell in status_to_dict(status)["health"] or []] == []


def test_the_last_bootstrap_is_the_last_applied_run_with_its_counts_and_chart(sandbox_env: EnvironmentFile) -> None:
    runs = [bootstrap_run("manual__plan", True, "2025-06-09T11:00:00Z", "2025-06-09T11:00:20Z"),
            bootstrap_run("manual__apply", False)]

    status = build_status(sandbox_env, EnvironmentData(runs, None, None), NOW)

    assert status.bootstrap is not None and status.bootstrap.run_id == "manual__apply"
    assert (status.bootstrap.state, status.bootstrap.outcome, status.bootstrap.dry_run) == ("success", "applied", False)
    assert status.bootstrap.counts == {"created": 1, "updated": 1, "unchanged": 3}
    assert status.bootstrap.duration_seconds == 210
    assert status.last_plan is not None and status.last_plan.run_id == "manual__plan" and status.last_plan.dry_run
    assert status.chart_version_installed == "0.4.0"
    assert not status.never_bootstrapped


def test_a_dry_run_only_environment_is_never_bootstrapped_and_shows_the_plan(sandbox_env: EnvironmentFile) -> None:
    status = build_status(sandbox_env, EnvironmentData([bootstrap_run("manual__plan", True)], None, None), NOW)

    assert status.never_bootstrapped and status.bootstrap is None
    assert status.last_plan is not None and status.last_plan.outcome == "planned"
    assert status.last_plan.counts == {"create": 1, "update": 1, "unchanged": 3}
    assert status.chart_version_installed is None  # a plan installs nothing


def test_a_failing_check_is_red_with_its_finding_and_a_crashed_one_unknown(sandbox_env: EnvironmentFile) -> None:
    finding = Finding("xcom", "XCom backend", "access denied on s3://b/xcom/", "403 PutObject", "re-run the bootstrap")
    health = health_run(healthy(xcom=[finding.to_dict()], logs=None))

    status = build_status(sandbox_env, EnvironmentData([bootstrap_run("a", False)], health, None), NOW)

    assert status.health is not None
    cells = {cell.check: cell for cell in status.health.checks}
    assert list(cells) == [task.removeprefix("check_") for task in CHECK_TASKS]
    assert cells["xcom"].status == "red" and cells["xcom"].findings == [finding.message]
    assert cells["logs"].status == "unknown" and cells["logs"].findings == []
    assert cells["secrets"].status == "green"
    assert status.health.end == datetime(2025, 6, 10, 11, 31, 10, tzinfo=UTC)


def test_an_expiring_token_is_a_warning_and_its_days_are_counted_from_now(sandbox_env: EnvironmentFile) -> None:
    warning = Finding("agent_token", "registry token (Secret r)", "token t expires in 3.0 days", "endAt", "rotate",
                      severity="warning")
    tokens = [{"kind": "agent token", "live": True, "expires_at": None},
              {"kind": "registry token", "live": True, "expires_at": "2025-06-13T00:00:00Z"}]
    health = health_run(healthy(agent_token=[warning.to_dict()]), tokens)

    status = build_status(sandbox_env, EnvironmentData([bootstrap_run("a", False)], health, None), NOW)

    assert status.health is not None
    cell = next(cell for cell in status.health.checks if cell.check == "agent_token")
    assert cell.status == "green" and cell.findings == [warning.message]  # a warning does not fail the check
    assert [(t.kind, t.days_left, t.live) for t in status.tokens] == [("agent token", None, True),
                                                                      ("registry token", 2.5, True)]


def test_a_health_run_without_token_data_has_no_token_days(sandbox_env: EnvironmentFile) -> None:
    status = build_status(sandbox_env, EnvironmentData([], health_run(healthy()), None), NOW)

    assert status.tokens == []


def test_drift_counts_the_report_findings_and_a_missing_report_is_unknown(sandbox_env: EnvironmentFile) -> None:
    report = {"drifted": True, "drifted_areas": ["release"], "notified": None,
              "findings": [{"area": "release", "message": "chart 0.3.0, spec 0.4.0"}, {"area": "release", "message": "values"}]}
    drift = RunData(dag_run("scheduled__d", "failed", "2025-06-10T00:00:00Z", "2025-06-10T00:01:00Z"),
                    {"report": "success"}, {("report", "return_value"): report})
    crashed = RunData(drift.run, {"report": "upstream_failed"}, {})

    assert build_status(sandbox_env, EnvironmentData([], None, drift), NOW).drift.findings == 2  # type: ignore[union-attr]
    assert build_status(sandbox_env, EnvironmentData([], None, crashed), NOW).drift.findings is None  # type: ignore[union-attr]


def test_the_json_form_is_plain_data(sandbox_env: EnvironmentFile) -> None:
    import json

    health = health_run(healthy(), [{"kind": "agent token", "live": True, "expires_at": "2025-07-10T12:00:00Z"}])
    status = build_status(sandbox_env, EnvironmentData([bootstrap_run("a", False)], health, None), NOW)

    data = json.loads(json.dumps(status_to_dict(status)))
    assert data["name"] == "sandbox" and data["never_bootstrapped"] is False
    assert data["bootstrap"]["start"] == "2025-06-09T10:00:00+00:00"
    assert data["tokens"] == [{"kind": "agent token", "days_left": 30.0, "live": True}]


def test_the_health_dag_pushes_each_tokens_expiry_and_never_its_id() -> None:
    from remote_agents.health.checks import token_expiry
    from remote_agents.health.diagnose import TokenEvidence

    tokens = [TokenEvidence("astro-agent-token", True, "tok-1", live=True, days_left=3.0, expires_at="2025-06-13T12:00:00Z"),
              TokenEvidence("astro-registry", True, "tok-2", live=False, kind="registry token")]

    pushed = token_expiry(tokens)

    assert pushed == [{"kind": "agent token", "live": True, "expires_at": "2025-06-13T12:00:00Z"},
                      {"kind": "registry token", "live": False, "expires_at": None}]
    assert "tok-1" not in str(pushed)


def test_the_table_has_one_row_per_environment_then_what_is_wrong(sandbox_env: EnvironmentFile, tmp_path: Path) -> None:
    from remote_agents.status import render_status_table

    (tmp_path / "bad.yaml").write_text("name: bad\nnamepsace: x\n")
    (invalid,) = environment_files(tmp_path)
    finding = Finding("xcom", "XCom backend", "access denied", "403 PutObject", "re-run the bootstrap")
    tokens = [{"kind": "agent token", "live": True, "expires_at": None},
              {"kind": "registry token", "live": True, "expires_at": "2025-06-13T00:00:00Z"}]
    unhealthy = build_status(sandbox_env, EnvironmentData([bootstrap_run("a", False)],
                                                          health_run(healthy(xcom=[finding.to_dict()], logs=None), tokens),
                                                          None), NOW)
    planned = build_status(sandbox_env, EnvironmentData([bootstrap_run("p", True)], None, None), NOW)

    lines = render_status_table([unhealthy, planned, build_status(invalid, None, NOW)], NOW).splitlines()

    header, first, second, third = lines[:4]
    assert header.split()[:2] == ["ENVIRONMENT", "BOOTSTRAP"]
    assert first.startswith("sandbox ") and "success 26h ago (3m30s) 1 created, 1 updated, 3 unchanged" in first
    assert "8 ok, xcom FAILED, logs unknown" in first and "agent never, registry 2.5d" in first
    assert f"0.4.0 (spec {sandbox_env.spec.chart.version})" in first  # type: ignore[union-attr]
    assert "never bootstrapped (planned 26h ago: 1 create, 1 update, 3 unchanged)" in second
    assert third.startswith("bad ") and "invalid spec" in third
    assert f"  sandbox xcom: {finding.message}" in lines
    assert any(line.startswith("  bad bad.yaml: ") and "namepsace" in line for line in lines)
