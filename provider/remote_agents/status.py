"""Every environment's state at a glance, from its Dags' runs and XComs. Pure: no I/O.

``build_status`` turns what a reader fetched from Airflow's REST API (``status_reader``) into an
``EnvironmentStatus``: the last bootstrap (dry runs apart, shown as the last plan), one health cell per
check, the drift count, the tokens' days left and the chart versions. ``remote-agents status`` prints
it; the Environments page (issue 18) is meant to show the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from remote_agents.environments import EnvironmentFile
from remote_agents.health.diagnose import CHECKS, ERROR, FINDINGS_KEY, TOKENS_KEY

SUMMARY_TASK = "summary"
REPORT_TASK = "report"
TOKEN_TASK = "check_agent_token"
RETURN_VALUE = "return_value"

CellStatus = Literal["green", "red", "unknown"]


def bootstrap_dag_id(name: str) -> str:
    return f"remote_agents_bootstrap__{name}"


def health_dag_id(name: str) -> str:
    return f"remote_agents_health__{name}"


def drift_dag_id(name: str) -> str:
    return f"remote_agents_drift__{name}"


# -- what the reader fetched ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """One Dag run as the REST API returned it, its task states, and the XComs read, by (task_id, key)."""

    run: Mapping[str, Any]
    task_states: Mapping[str, str | None] = field(default_factory=dict)
    xcoms: Mapping[tuple[str, str], Any] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = RETURN_VALUE) -> Any:
        return self.xcoms.get((task_id, key))


@dataclass(frozen=True)
class EnvironmentData:
    """``bootstrap_runs`` newest first, each with its summary XCom; the last finished health and drift runs."""

    bootstrap_runs: Sequence[RunData]
    health: RunData | None
    drift: RunData | None


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapRun:
    dag_id: str
    run_id: str
    state: str
    start: datetime | None
    end: datetime | None
    dry_run: bool
    outcome: str | None  # the summary's: applied / planned / failed; None when it has no summary
    counts: dict[str, int]
    failures: list[str]

    @property
    def duration_seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class CheckCell:
    check: str
    status: CellStatus
    findings: list[str]  # each finding's message; warnings (green cells) included


@dataclass(frozen=True)
class HealthRun:
    dag_id: str
    run_id: str
    state: str
    end: datetime | None
    checks: list[CheckCell]


@dataclass(frozen=True)
class DriftRun:
    dag_id: str
    run_id: str
    state: str
    end: datetime | None
    findings: int | None  # None: the report task left no report


@dataclass(frozen=True)
class TokenDays:
    kind: str  # "agent token" or "registry token"
    days_left: float | None  # None: it never expires, or is not live
    live: bool | None


@dataclass(frozen=True)
class EnvironmentStatus:
    name: str
    spec_file: str
    error: list[str] | None  # the spec's problems, when it is invalid
    bootstrap: BootstrapRun | None  # the last run that was not a dry run
    last_plan: BootstrapRun | None  # the last dry run, when it is newer than that
    health: HealthRun | None
    drift: DriftRun | None
    tokens: list[TokenDays]
    chart_version_spec: str | None
    chart_version_installed: str | None

    @property
    def never_bootstrapped(self) -> bool:
        return self.error is None and self.bootstrap is None


# -- the builder ------------------------------------------------------------------------------------


def build_status(environment: EnvironmentFile, data: EnvironmentData | None, now: datetime) -> EnvironmentStatus:
    """The status of one spec file; ``data`` is None for an invalid spec (its Dags only report the error)."""
    if environment.spec is None or data is None:
        problems = environment.error.problems if environment.error else ["the spec could not be read"]
        return EnvironmentStatus(environment.name, environment.path.name, list(problems), None, None, None, None, [],
                                 None, None)
    name = environment.spec.name
    runs = [bootstrap_run(bootstrap_dag_id(name), run) for run in data.bootstrap_runs]
    applied = next((run for run in runs if not run.dry_run), None)
    plan = next((run for run in runs if run.dry_run), None)
    if plan and applied and runs.index(plan) > runs.index(applied):
        plan = None  # older than the last bootstrap: no longer news
    installed = _installed_chart_version(data.bootstrap_runs, runs, applied)
    return EnvironmentStatus(
        name=name,
        spec_file=environment.path.name,
        error=None,
        bootstrap=applied,
        last_plan=plan,
        health=health_run(health_dag_id(name), data.health) if data.health else None,
        drift=drift_run(drift_dag_id(name), data.drift) if data.drift else None,
        tokens=token_days(data.health, now) if data.health else [],
        chart_version_spec=environment.spec.chart.version,
        chart_version_installed=installed,
    )


def bootstrap_run(dag_id: str, data: RunData) -> BootstrapRun:
    report = data.xcom(SUMMARY_TASK)
    report = report if isinstance(report, Mapping) else {}
    # The summary says whether it was a dry run; a run that never reached it has only its conf.
    dry_run = bool(report["dry_run"]) if "dry_run" in report else truthy((data.run.get("conf") or {}).get("dry_run"))
    return BootstrapRun(
        dag_id=dag_id,
        run_id=str(data.run["dag_run_id"]),
        state=str(data.run.get("state")),
        start=parse_time(data.run.get("start_date")),
        end=parse_time(data.run.get("end_date")),
        dry_run=dry_run,
        outcome=report.get("outcome"),
        counts=dict(report.get("counts") or {}),
        failures=[f"{f['task_id']}: {f['error']}" for f in report.get("failures") or []],
    )


def _installed_chart_version(datas: Sequence[RunData], runs: Sequence[BootstrapRun],
                             applied: BootstrapRun | None) -> str | None:
    if applied is None:
        return None
    report = datas[runs.index(applied)].xcom(SUMMARY_TASK)
    return ((report or {}).get("facts") or {}).get("chart_version") if isinstance(report, Mapping) else None


def health_run(dag_id: str, data: RunData) -> HealthRun:
    return HealthRun(dag_id=dag_id, run_id=str(data.run["dag_run_id"]), state=str(data.run.get("state")),
                     end=parse_time(data.run.get("end_date")), checks=[check_cell(check, data) for check in CHECKS])


def check_cell(check: str, data: RunData) -> CheckCell:
    """Green without error findings, red with one, unknown when the task pushed none (it crashed, or never ran)."""
    findings = data.xcom(f"check_{check}", FINDINGS_KEY)
    if not isinstance(findings, list):
        return CheckCell(check, "unknown", [])
    failed = any(finding.get("severity", ERROR) == ERROR for finding in findings)
    return CheckCell(check, "red" if failed else "green", [str(finding.get("message")) for finding in findings])


def drift_run(dag_id: str, data: RunData) -> DriftRun:
    report = data.xcom(REPORT_TASK)
    findings = len(report.get("findings") or []) if isinstance(report, Mapping) else None
    return DriftRun(dag_id=dag_id, run_id=str(data.run["dag_run_id"]), state=str(data.run.get("state")),
                    end=parse_time(data.run.get("end_date")), findings=findings)


def token_days(data: RunData, now: datetime) -> list[TokenDays]:
    """Days left from ``now``, not from the check: the health run may be hours old."""
    tokens = data.xcom(TOKEN_TASK, TOKENS_KEY)
    if not isinstance(tokens, list):
        return []
    return [TokenDays(str(token.get("kind")), _days_until(parse_time(token.get("expires_at")), now), token.get("live"))
            for token in tokens]


def _days_until(moment: datetime | None, now: datetime) -> float | None:
    return round((moment - now).total_seconds() / 86400, 1) if moment else None


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def truthy(value: Any) -> bool:
    # conf comes from a trigger form or an API client: a boolean, or its string.
    return value.strip().lower() in ("true", "1") if isinstance(value, str) else bool(value)


def status_to_dict(status: EnvironmentStatus) -> dict[str, Any]:
    """The model as JSON-ready data: times in ISO 8601, with the derived flags."""
    data = _iso_times(asdict(status))
    data["never_bootstrapped"] = status.never_bootstrapped
    for run in ("bootstrap", "last_plan"):
        if data[run] is not None:
            data[run]["duration_seconds"] = getattr(status, run).duration_seconds
    return data


def _iso_times(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _iso_times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_iso_times(item) for item in value]
    return value


# -- text -------------------------------------------------------------------------------------------

COLUMNS = ("ENVIRONMENT", "BOOTSTRAP", "HEALTH", "DRIFT", "TOKENS", "CHART")


def render_status_table(statuses: Sequence[EnvironmentStatus], now: datetime) -> str:
    """One row per environment, then one indented line per red check's finding and per spec problem."""
    rows = [COLUMNS, *(_row(status, now) for status in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in rows]
    details = [line for status in statuses for line in _details(status)]
    return "\n".join(lines + ([""] + details if details else [])) + "\n"


def _row(status: EnvironmentStatus, now: datetime) -> tuple[str, ...]:
    if status.error is not None:
        return (status.name, f"invalid spec {status.spec_file}", "-", "-", "-", "-")
    return (status.name, _bootstrap_cell(status, now), _health_cell(status.health, now), _drift_cell(status.drift),
            _tokens_cell(status.tokens), f"{status.chart_version_installed or '-'} (spec {status.chart_version_spec})")


def _bootstrap_cell(status: EnvironmentStatus, now: datetime) -> str:
    plan = status.last_plan
    planned = f"planned {_ago(plan.start, now)}: {_counts(plan.counts)}" if plan else ""
    run = status.bootstrap
    if run is None:
        return f"never bootstrapped ({planned})" if planned else "never bootstrapped"
    took = f" ({_duration(run.duration_seconds)})" if run.duration_seconds is not None else ""
    text = f"{run.state} {_ago(run.start, now)}{took} {_counts(run.counts)}"
    return f"{text}; {planned}" if planned else text


def _health_cell(health: HealthRun | None, now: datetime) -> str:
    if health is None:
        return "never checked"
    green = sum(cell.status == "green" for cell in health.checks)
    others = [f"{cell.check} {'FAILED' if cell.status == 'red' else 'unknown'}"
              for cell in health.checks if cell.status != "green"]
    return f"{_ago(health.end, now)}: " + ", ".join([f"{green} ok", *others])


def _drift_cell(drift: DriftRun | None) -> str:
    if drift is None:
        return "never checked"
    return "unknown" if drift.findings is None else str(drift.findings)


def _tokens_cell(tokens: Sequence[TokenDays]) -> str:
    def days(token: TokenDays) -> str:
        if token.live is False:
            return "expired"
        return "never" if token.days_left is None else f"{token.days_left:g}d"

    return ", ".join(f"{token.kind.removesuffix(' token')} {days(token)}" for token in tokens) or "-"


def _details(status: EnvironmentStatus) -> list[str]:
    if status.error is not None:
        return [f"  {status.name} {status.spec_file}: {problem}" for problem in status.error]
    failures = [f"  {status.name} bootstrap: {failure}" for failure in status.bootstrap.failures] if status.bootstrap else []
    cells = status.health.checks if status.health else []
    return failures + [f"  {status.name} {cell.check}: {finding}" for cell in cells if cell.status == "red"
                       for finding in cell.findings]


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {action}" for action, count in counts.items()) or "no changes recorded"


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "(not started)"
    minutes = int((now - moment).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m ago"
    return f"{minutes // 60}h ago" if minutes < 48 * 60 else f"{minutes // 1440}d ago"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
