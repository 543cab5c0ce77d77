"""The stand-in for the Remote Execution Deployment's agents: a real local Airflow 3.

`AgentStandIn` runs api-server, scheduler (LocalExecutor), dag-processor and triggerer on SQLite,
each in its own process group, and builds their environment from the values of the agent Helm
release that was actually installed, so a self-test run on it proves the rendered configuration
(XCom backend, secrets backend, remote logging) rather than one the sandbox made up.

How the values become the task environment (mirrors the chart's `astro-agent.agentEnv` helper):
- `xcomBackend` -> AIRFLOW__CORE__XCOM_BACKEND, `secretBackend` -> AIRFLOW__SECRETS__BACKEND,
  `stateStoreBackend` (if set) -> AIRFLOW__WORKERS__STATE_STORE_BACKEND, `logLevel` ->
  AIRFLOW__LOGGING__LOGGING_LEVEL, then every `commonEnv` name/value pair (a later one wins).
- `dagBundleConfigList` is not used: the chart's bundle (LocalDagBundle in the image, or a Git repo)
  cannot be reached from here, so the stand-in parses `dags_folder` through Airflow's default
  "dags-folder" LocalDagBundle, which is what the chart's default value configures anyway.
- `workers[].env` is not used: one LocalExecutor runs the tasks of every queue, so a per-worker
  env has no single process to go to (in the tutorial it only carries the image's PYTHONPATH).
- `workers[].queues` decides which queues run: the executor (`sandbox/executor.py`) leaves tasks of
  any other queue queued, as a queue with no worker agent does on Astro.

AWS: `aws_env` gives the processes the IRSA pod environment (AWS_ROLE_ARN,
AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ENDPOINT_URL, region; no static keys), so moto enforces the role's
policies; `component_aws_env` replaces it for the `dag-processor` and `triggerer` processes, whose
Pods run as their own ServiceAccounts (the scheduler's task processes are the workers). AWS_ENDPOINT_URL alone sends every client to moto; verified (boto3/botocore 1.43,
aiobotocore 3.10, s3fs 2026.9, amazon provider 9.39) for the S3 XCom backend (s3fs on aiobotocore,
including its web-identity STS call), SecretsManagerBackend with endpoint-less BACKEND_KWARGS, and
S3 remote logging through an endpoint-less AIRFLOW_CONN_AWS_DEFAULT. So no endpoint is written into
the installed JSON values. The one rewrite: a LOGGING_CONFIG_CLASS from Astro Runtime's
`astronomer.runtime` package (tutorial values) is dropped, see `_without_astro_runtime_only`.

Like Astro's API server, the stand-in's api-server cannot read the agents' local task logs (it has
an empty log folder of its own): task logs reach the REST API only through remote logging.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# The REST client moved into the provider (the health Dag uses it against real Deployments);
# re-exported here for the sandbox and its tests.
from remote_agents.hooks.deployment import AirflowRestClient

__all__ = ["AgentStandIn", "AirflowRestClient", "agent_env", "worker_queues"]

ADMIN_USER = "admin"
# Astro Runtime's logging config wraps the same S3 task handler that REMOTE_LOGGING* configure;
# the package exists only in the Astro Runtime image.
_ASTRO_RUNTIME_PACKAGE = "astronomer.runtime"
# No serve-logs sub-servers: agents serve no logs to Astro's API server, which reads task logs from
# remote storage only (and they cost two processes and seconds of start-up on 2 cores).
_COMMANDS = {
    "api-server": ("api-server",),
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}
_INHERITED_VARIABLES = ("PATH", "HOME", "LANG")
_ROOT = Path(__file__).resolve().parents[1]  # makes `sandbox.executor` importable by the stand-in


# --------------------------------------------------------------------------------------------
# From the installed release's values to the agents' environment (pure)
# --------------------------------------------------------------------------------------------


def agent_env(values: Mapping[str, Any]) -> dict[str, str]:
    """The environment the chart gives every agent container, without what only Kubernetes uses."""
    env = {
        "AIRFLOW__CORE__XCOM_BACKEND": str(values["xcomBackend"]),
        "AIRFLOW__SECRETS__BACKEND": str(values["secretBackend"]),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": str(values.get("logLevel") or "INFO"),
    }
    if values.get("stateStoreBackend"):
        env["AIRFLOW__WORKERS__STATE_STORE_BACKEND"] = str(values["stateStoreBackend"])
    for item in values.get("commonEnv") or []:
        env[str(item["name"])] = str(item["value"])
    return _without_astro_runtime_only(env)


def worker_queues(values: Mapping[str, Any]) -> frozenset[str]:
    """Queues that some worker Deployment consumes (one queue per workers[] entry)."""
    return frozenset(str(worker["queues"]) for worker in values.get("workers") or [])


def _without_astro_runtime_only(env: dict[str, str]) -> dict[str, str]:
    # The tutorial's commonEnv names Astro Runtime's logging config, which is not importable outside
    # the Astro image and would stop every Airflow process from starting. Airflow's default logging
    # config reads the same REMOTE_LOGGING/REMOTE_BASE_LOG_FOLDER/REMOTE_LOG_CONN_ID settings.
    logging_class = env.get("AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS", "")
    if logging_class.startswith(_ASTRO_RUNTIME_PACKAGE):
        return {k: v for k, v in env.items() if k != "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS"}
    return env


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    api: int
    worker_log_server: int
    trigger_log_server: int


def _beats_since(component: Mapping[str, Any], moment: datetime) -> bool:
    beat = next((value for key, value in component.items() if key.startswith("latest_") and value), None)
    return component.get("status") == "healthy" and beat is not None and datetime.fromisoformat(beat) >= moment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class AgentStandIn:
    """A local Airflow 3 whose task environment comes from the installed agent release's values.

    Use as a context manager, or call `start()` and `stop()`. Two stand-ins can run at once:
    each has its own AIRFLOW_HOME under `state_dir` and its own ports.
    """

    def __init__(
        self,
        state_dir: Path,
        dags_folder: Path,
        values: Mapping[str, Any],
        aws_env: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        parallelism: int = 2,
        component_aws_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.dags_folder = Path(dags_folder)
        self.values = dict(values)
        self.aws_env = dict(aws_env)
        self.component_aws_env = {name: dict(env) for name, env in (component_aws_env or {}).items()}
        self.extra_env = dict(extra_env or {})
        self.parallelism = parallelism
        self.ports = Ports(_free_port(), _free_port(), _free_port())
        # Shared by all processes: the scheduler signs task tokens the api-server's Execution API checks.
        self._jwt_secret = secrets.token_hex(64)
        self._password = secrets.token_urlsafe(16)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self._migrated = False

    # -- facts -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def worker_queues(self) -> frozenset[str]:
        return worker_queues(self.values)

    @property
    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self._processes.items()}

    def process_log(self, component: str) -> Path:
        """Where a component's stdout/stderr go (the task logs themselves go to the log bucket)."""
        return self.state_dir / "processes" / f"{component}.log"

    def env(self) -> dict[str, str]:
        """The environment of the four processes (the api-server reads task logs and secrets too).

        Later sources win: values, then the IRSA env, then the stand-in's own runtime settings (ports,
        home, executor: a value must not break the stand-in), then `extra_env`.
        """
        return {
            **self._clean_base_env(),
            **agent_env(self.values),
            **self.aws_env,
            **self._runtime_settings(),
            **self.extra_env,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> AgentStandIn:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "processes").mkdir(parents=True, exist_ok=True)
        env = self.env()
        self._write_passwords_file()
        if not self._migrated:
            self._migrate_db(env)
            self._migrated = True
        launched = datetime.now(UTC)
        for component, command in _COMMANDS.items():
            self._processes[component] = self._launch(component, command, self._component_env(component, env))
        self._wait_until_healthy(timeout, launched)
        return self

    def stop(self, timeout: float = 6.0) -> None:
        """TERM every process group, KILL what is left after `timeout`; leaves no process or port.

        Usually all are gone in 1-4 s; the triggerer sometimes gives its trigger runner 10 s more,
        which a throw-away sandbox need not wait for.
        """
        groups = [process.pid for process in self._processes.values()]
        for pgid in groups:
            self._signal_group(pgid, signal.SIGTERM)
        if not self._wait_groups_gone(groups, timeout):
            for pgid in groups:
                self._signal_group(pgid, signal.SIGKILL)
            self._wait_groups_gone(groups, 5.0)
        for process in self._processes.values():
            process.wait(timeout=5.0)
        self._processes.clear()
        self._token = None

    def restart(
        self,
        values: Mapping[str, Any] | None = None,
        aws_env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> AgentStandIn:
        """Restart with the release's new values (as a rollout would); the metadata DB is kept."""
        self.stop()
        if values is not None:
            self.values = dict(values)
        if aws_env is not None:
            self.aws_env = dict(aws_env)
        return self.start(timeout)

    def __enter__(self) -> AgentStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- REST ------------------------------------------------------------------------------

    def api_token(self) -> str:
        """A JWT from /auth/token with the admin password: the server issues it, like a real login.

        Chosen over minting with the shared JWT secret because that secret also signs Execution-API
        task tokens, so it stays inside the stand-in's processes.
        """
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token", json={"username": ADMIN_USER, "password": self._password}, timeout=30.0
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def client(self) -> AirflowRestClient:
        return AirflowRestClient(self.url, self.api_token())

    # -- internals -------------------------------------------------------------------------

    def _clean_base_env(self) -> dict[str, str]:
        # Built from scratch: the test process's AIRFLOW_* settings and AWS keys must not leak in.
        base = {name: os.environ[name] for name in _INHERITED_VARIABLES if name in os.environ}
        missing = self.home / "no-aws-files"
        # A pod has no ~/.aws; keep the host's shared config and credentials files out as well.
        base["AWS_CONFIG_FILE"] = str(missing / "config")
        base["AWS_SHARED_CREDENTIALS_FILE"] = str(missing / "credentials")
        return base

    def _runtime_settings(self) -> dict[str, str]:
        """What makes these processes a small, fast, isolated Airflow; wins over the values."""
        ports = self.ports
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Runs only the queues the values' workers consume (see sandbox/executor.py).
            "AIRFLOW__CORE__EXECUTOR": "sandbox.executor.QueueServingLocalExecutor",
            "SANDBOX_WORKER_QUEUES": ",".join(sorted(self.worker_queues)),
            "PYTHONPATH": str(_ROOT),
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports.api),
            "AIRFLOW__API__BASE_URL": self.url,
            # Tasks call back here; the default follows base_url, set it anyway so a changed port never breaks it.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # No serve-logs runs, but for a running task the api-server asks these ports: ours, not the
            # host-wide defaults 8793/8794, which another stand-in's processes would answer.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_log_server),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.trigger_log_server),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",  # user:role
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # The task supervisor may notice its task's exit only at the next heartbeat (default 5 s):
            # that delays every task and widens Airflow's defer-exit race (apache/airflow#67287).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        }

    @property
    def _passwords_file(self) -> Path:
        return self.home / "passwords.json"

    def _write_passwords_file(self) -> None:
        # Written before the api-server starts, so it keeps our password instead of generating one.
        self._passwords_file.write_text(json.dumps({ADMIN_USER: self._password}))

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("airflow")), *args]

    def _migrate_db(self, env: dict[str, str]) -> None:
        with self.process_log("db-migrate").open("wb") as log:
            subprocess.run(self._airflow("db", "migrate"), env=env, stdout=log, stderr=subprocess.STDOUT, check=True)

    def _component_env(self, component: str, env: dict[str, str]) -> dict[str, str]:
        if component in self.component_aws_env:
            # The Dag processor and triggerer Pods have their own ServiceAccount, token and role.
            return {**env, **self.component_aws_env[component], **self._runtime_settings(), **self.extra_env}
        if component != "api-server":
            return env
        # Astro's API server cannot see the agents' disks: give ours an empty local log folder, so
        # the task logs it serves can only come through remote logging, as on a real Deployment.
        return {**env, "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "api-server-task-logs")}

    def _launch(self, component: str, command: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.process_log(component).open("ab") as log:
            return subprocess.Popen(
                self._airflow(*command),
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches its children too
            )

    def _wait_until_healthy(self, timeout: float, launched: datetime) -> None:
        """Until this start's scheduler, Dag processor and triggerer heartbeat.

        After a restart the kept database still holds the old processes' heartbeats, which the health
        endpoint reports as healthy for a while: only a heartbeat newer than the launch counts.
        """
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._raise_if_a_process_exited()
            health = self._health()
            if health and (health.get("metadatabase") or {}).get("status") == "healthy" and all(
                _beats_since(health.get(part) or {}, launched) for part in ("scheduler", "dag_processor", "triggerer")
            ):
                return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"stand-in not healthy within {timeout} s: {health}")

    def _health(self) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2.0)
        except httpx.TransportError:
            return {}
        return dict(response.json()) if response.status_code == 200 else {}

    def _raise_if_a_process_exited(self) -> None:
        for component, process in self._processes.items():
            if process.poll() is not None:
                tail = self.process_log(component).read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"stand-in {component} exited with {process.returncode}:\n{tail}")

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def _wait_groups_gone(self, groups: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self._processes.values():
                process.poll()  # reap the leaders, or their zombies keep the groups alive
            if not any(_group_alive(pgid) for pgid in groups):
                return True
            time.sleep(0.1)
        return False
