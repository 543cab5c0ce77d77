"""The Remote Execution Deployment's Airflow REST API (/api/v2): trigger a Dag, read runs, XComs, logs.

``AirflowRestClient`` is the few calls a self-test needs, with a bearer token; it works against a
real Astro Deployment and against the sandbox's stand-in alike. ``DeploymentHook`` owns the
Connection (host = the Deployment's Airflow URL, password = a Deployment API token) and is the one
place that turns transport and HTTP errors into a ``DeploymentApiError`` naming the URL, the status
and the likely fix, never the token.
What the calls rely on, from Airflow's REST API reference
(https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html): triggering a Dag run
needs ``logical_date`` (null is allowed) and answers 200, and task logs are read as JSON.

Why not the official ``apache-airflow-client``: the self-test needs six calls, each checked against a
real Airflow 3 API server in the tests (the sandbox's stand-in agents), while the generated client is
a second HTTP stack (urllib3) with its own pinned pydantic models, installed into the management
Deployment for these six calls. Retries go through tenacity, as in the other hooks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import httpx
import tenacity
from airflow.sdk import BaseHook, Connection
from airflow.sdk.log import mask_secret

from remote_agents.errors import ConfigError, HealthCheckError

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
# An API server that is restarting, or whose metadata database is busy, answers 5xx for a moment.
RETRIED_STATUSES = frozenset({500, 502, 503, 504})
ATTEMPTS = 3


class DeploymentApiError(HealthCheckError):
    """The Deployment's REST API could not be reached or refused a call."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class AirflowRestClient:
    """The few Airflow 3 REST calls a self-test needs, with a bearer token; a 5xx is tried again twice."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            # A connection per call: calls come seconds apart, and a kept-alive connection the server
            # (or a load balancer) closed in between fails the next call with "connection reset".
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowRestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_for_dag(self, dag_id: str, timeout: float, poll_interval: float = 0.5) -> None:
        """Wait until the Dag is parsed; on timeout the error lists the import errors."""
        deadline = time.monotonic() + timeout
        while self._request("GET", f"/dags/{dag_id}").status_code == 404:
            if time.monotonic() > deadline:
                errors = self._request("GET", "/importErrors").json().get("import_errors", [])
                raise TimeoutError(f"Dag {dag_id!r} not parsed within {timeout} s; import errors: {errors}")
            time.sleep(poll_interval)

    def dag_exists(self, dag_id: str) -> bool:
        response = self._request("GET", f"/dags/{dag_id}")
        if response.status_code == 404:
            return False
        self._ok(response)
        return True

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause the Dag and start a run now; returns its run_id."""
        self._ok(self._request("PATCH", f"/dags/{dag_id}", params={"update_mask": "is_paused"}, json={"is_paused": False}))
        # logical_date must be present (422 without it); null means "now", no logical date.
        response = self._ok(self._request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})}))
        return str(response.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._ok(self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")).json()["state"])

    def wait(self, dag_id: str, run_id: str, timeout: float, poll_interval: float = 0.5) -> str:
        """Poll until the run is success/failed; after `timeout` return the state it is still in."""
        deadline = time.monotonic() + timeout
        state = self.run_state(dag_id, run_id)
        while state not in TERMINAL_RUN_STATES and time.monotonic() < deadline:
            time.sleep(poll_interval)
            state = self.run_state(dag_id, run_id)
        return state

    def dag_runs(self, dag_id: str, limit: int) -> list[dict[str, Any]]:
        """The Dag's latest runs, newest first (by run_after: a manual run has no logical date)."""
        params = {"order_by": "-run_after", "limit": limit}
        return list(self._ok(self._request("GET", f"/dags/{dag_id}/dagRuns", params=params)).json()["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self._ok(self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"))
        return list(response.json()["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom value as the metadata DB holds it.

        The API never calls a custom XCom backend: with the object-storage backend (above its
        threshold) this is the object's path, e.g. "s3://aws_default@bucket/xcom/<dag>/<run>/<task>/<uuid>".
        """
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._ok(self._request("GET", path)).json()["value"]

    def log_events(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[dict[str, Any]]:
        """Structured log events of one try; match on each event's "event" text (text/plain is refused)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        response = self._ok(self._request("GET", path, params={"full_content": True}))
        return list(response.json()["content"])

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer; a 5xx is asked again (1 s, then 2 s later) and the last answer returned."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda response: response.status_code in RETRIED_STATUSES),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_incrementing(start=1, increment=1),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        return retrying(self._http.request, method, path, **kwargs)

    @staticmethod
    def _ok(response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise httpx.HTTPStatusError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:500]}",
                request=response.request,
                response=response,
            )
        return response


_HINTS = {
    401: "the API token was refused; put a valid Deployment API token in the connection's password",
    403: "the token lacks permission (or expired); use a Deployment API token with the Admin role",
    404: "the Dag or run does not exist there; check that remote_agents_selftest is in the Deployment's Dag bundle",
}


def api_error(doing: str, base_url: str, error: Exception) -> DeploymentApiError:
    """One message per failure: what we did, where, what came back and what to check."""
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        hint = _HINTS.get(status, "see the status; retry later if it is a 5xx")
        return DeploymentApiError(f"{doing} at {base_url}: HTTP {status}; {hint}", status)
    return DeploymentApiError(
        f"{doing}: the Deployment API at {base_url} is unreachable ({type(error).__name__}); check the "
        "connection's host (the Deployment's Airflow URL), DNS and the network path from the management Deployment"
    )


class DeploymentHook(BaseHook):
    """The Airflow REST API of the Remote Execution Deployment, through an ``http`` Connection.

    :param deployment_conn_id: host = the Deployment's Airflow URL (``https://<id>.astronomer.run/<short>``),
        password = a Deployment API token (Admin role, to trigger runs).
    """

    conn_name_attr = "deployment_conn_id"
    default_conn_name = "astro_deployment"
    conn_type = "http"
    hook_name = "Astro Deployment Airflow API"

    def __init__(self, deployment_conn_id: str = default_conn_name, timeout: float = 30.0) -> None:
        super().__init__()
        self.deployment_conn_id = deployment_conn_id
        self.timeout = timeout

    @cached_property
    def connection(self) -> Connection:
        conn = self.get_connection(self.deployment_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return conn

    @cached_property
    def base_url(self) -> str:
        host = (self.connection.host or "").rstrip("/")
        if not host:
            raise ConfigError(
                [f"host: connection {self.deployment_conn_id!r} has no host; set it to the Deployment's Airflow URL"],
                source=f"connection {self.deployment_conn_id}",
            )
        if "://" not in host:
            host = f"{self.connection.schema or 'https'}://{host}"
        port = self.connection.port
        return f"{host}:{port}" if port and host.count(":") < 2 else host

    def get_conn(self) -> AirflowRestClient:
        if not self.connection.password:
            raise ConfigError(
                [f"password: connection {self.deployment_conn_id!r} has no API token; "
                 "create a Deployment API token in Astro and put it in the password field"],
                source=f"connection {self.deployment_conn_id}",
            )
        return AirflowRestClient(self.base_url, self.connection.password, timeout=self.timeout)

    def call(self, doing: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``getattr(client, method)(*args)``, with errors mapped to ``DeploymentApiError``."""
        with self.get_conn() as client:
            try:
                return getattr(client, method)(*args, **kwargs)
            except (httpx.HTTPStatusError, httpx.TransportError) as error:
                raise api_error(doing, self.base_url, error) from None

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.call("reading the API version", "dag_exists", "remote_agents_selftest")
        except (DeploymentApiError, ConfigError) as error:
            return False, str(error)
        return True, f"Connected to {self.base_url}"
