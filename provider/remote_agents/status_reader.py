"""Reads what the status model needs from an Airflow's public REST API (/api/v2), for ``remote-agents status``.

Per environment: its bootstrap Dag's latest runs with their summary XCom (until the last one that
was not a dry run), and the last finished health and drift runs with their checks' findings and
report. A Dag the Airflow does not have reads as a Dag that never ran. Auth is what Airflow's auth
managers accept on /api/v2: a bearer token (a JWT, or an Astro Deployment API token), which
``login`` gets from /auth/token for a user name and password.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx

from remote_agents.environments import EnvironmentFile
from remote_agents.hooks.deployment import AirflowRestClient
from remote_agents.status import (
    REPORT_TASK,
    SUMMARY_TASK,
    TOKEN_TASK,
    EnvironmentData,
    EnvironmentStatus,
    RunData,
    bootstrap_dag_id,
    build_status,
    drift_dag_id,
    health_dag_id,
    truthy,
)
from remote_agents.health.diagnose import CHECKS, FINDINGS_KEY, TOKENS_KEY

BOOTSTRAP_RUNS = 25  # how far back the last non-dry-run bootstrap is looked for
RECENT_RUNS = 5  # a health or drift run still running is skipped for the last finished one
FINISHED = frozenset({"success", "failed"})
_HINTS = {
    401: "the token was refused; pass a valid one (--token or AIRFLOW_API_TOKEN)",
    # Airflow's api-server also answers 403 to a token it cannot decode.
    403: "the token was refused, or may not read these Dags' runs; pass a valid one (--token or AIRFLOW_API_TOKEN)",
}


class StatusApiError(Exception):
    """The Airflow REST API could not be reached or refused a call; the message never holds the token."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the API's HTTP status; None when it was unreachable


def login(url: str, username: str, password: str) -> str:
    """A JWT for this user, from the api-server's /auth/token (simple and FAB auth managers alike)."""
    try:
        response = httpx.post(f"{url.rstrip('/')}/auth/token", json={"username": username, "password": password},
                              timeout=30.0)
    except httpx.TransportError as error:
        raise StatusApiError(f"{url} is unreachable ({type(error).__name__}); check --url") from None
    if response.is_error:
        raise StatusApiError(f"logging in as {username!r} at {url}: HTTP {response.status_code}; check the user "
                             "name and password (AIRFLOW_API_USERNAME, AIRFLOW_API_PASSWORD)")
    return str(response.json()["access_token"])


def read_status(client: AirflowRestClient, environments: Iterable[EnvironmentFile], now: datetime) -> list[EnvironmentStatus]:
    return [build_status(environment, read_environment(client, environment.name) if environment.spec else None, now)
            for environment in environments]


def read_readable_status(client: AirflowRestClient, environments: Iterable[EnvironmentFile],
                         now: datetime) -> list[EnvironmentStatus]:
    """Like ``read_status``, without the environments whose Dags the token's user may not read (HTTP 403).

    Only for a token already known to be valid: Airflow also answers 403 to a token it cannot decode.
    """
    statuses = []
    for environment in environments:
        try:
            data = read_environment(client, environment.name) if environment.spec else None
        except StatusApiError as error:
            if error.status_code == 403:
                continue  # the auth manager hides these Dags from this user: so does the status
            raise
        statuses.append(build_status(environment, data, now))
    return statuses


def read_environment(client: AirflowRestClient, name: str) -> EnvironmentData:
    try:
        return EnvironmentData(
            bootstrap_runs=_bootstrap_runs(client, bootstrap_dag_id(name)),
            health=_health_run(client, health_dag_id(name)),
            drift=_drift_run(client, drift_dag_id(name)),
        )
    except httpx.HTTPStatusError as error:
        status = error.response.status_code
        hint = _HINTS.get(status, "see the status; retry later if it is a 5xx")
        raise StatusApiError(f"reading environment {name!r} at {client.base_url}: HTTP {status}; {hint}",
                             status) from None
    except httpx.TransportError as error:
        raise StatusApiError(f"the Airflow REST API at {client.base_url} is unreachable ({type(error).__name__}); "
                             "check --url (AIRFLOW_API_URL)") from None


def _bootstrap_runs(client: AirflowRestClient, dag_id: str) -> list[RunData]:
    """Newest first, down to the first run that was not a dry run: the model needs no older ones."""
    read = []
    for run in _runs(client, dag_id, BOOTSTRAP_RUNS):
        summary = _xcom(client, dag_id, run["dag_run_id"], SUMMARY_TASK)
        read.append(RunData(run, {}, {(SUMMARY_TASK, "return_value"): summary} if summary is not None else {}))
        dry_run = summary.get("dry_run") if isinstance(summary, dict) else (run.get("conf") or {}).get("dry_run")
        if not truthy(dry_run):
            break
    return read


def _health_run(client: AirflowRestClient, dag_id: str) -> RunData | None:
    run = _last_finished(client, dag_id)
    if run is None:
        return None
    states = _task_states(client, dag_id, run["dag_run_id"])
    wanted = [(f"check_{check}", FINDINGS_KEY) for check in CHECKS] + [(TOKEN_TASK, TOKENS_KEY)]
    return RunData(run, states, _xcoms(client, dag_id, run["dag_run_id"], states, wanted))


def _drift_run(client: AirflowRestClient, dag_id: str) -> RunData | None:
    run = _last_finished(client, dag_id)
    if run is None:
        return None
    states = _task_states(client, dag_id, run["dag_run_id"])
    return RunData(run, states, _xcoms(client, dag_id, run["dag_run_id"], states, [(REPORT_TASK, "return_value")]))


def _runs(client: AirflowRestClient, dag_id: str, limit: int) -> list[dict[str, Any]]:
    try:
        return client.dag_runs(dag_id, limit)
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            return []  # that Airflow has no such Dag: never run there
        raise


def _last_finished(client: AirflowRestClient, dag_id: str) -> dict[str, Any] | None:
    return next((run for run in _runs(client, dag_id, RECENT_RUNS) if run.get("state") in FINISHED), None)


def _task_states(client: AirflowRestClient, dag_id: str, run_id: str) -> dict[str, str | None]:
    return {ti["task_id"]: ti.get("state") for ti in client.task_instances(dag_id, run_id)}


def _xcoms(client: AirflowRestClient, dag_id: str, run_id: str, states: dict[str, str | None],
           wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Only tasks that ran can have pushed anything: the others cost no call."""
    values = {(task_id, key): _xcom(client, dag_id, run_id, task_id, key)
              for task_id, key in wanted if states.get(task_id) in FINISHED}
    return {where: value for where, value in values.items() if value is not None}


def _xcom(client: AirflowRestClient, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    try:
        value = client.xcom(dag_id, run_id, task_id, key)
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            return None
        raise
    return _native(value)


def _native(value: Any) -> Any:
    # The API returns the value as the metadata database holds it: JSON, which some databases hand
    # back still as its string.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
