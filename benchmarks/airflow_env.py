"""A throw-away Airflow for benchmarks: its own AIRFLOW_HOME, an api-server and a triggerer.

``dag.test()`` alone runs tasks one after another and triggers inline (blocking), which would
serialize the bootstrap's parallel branches. With ``dag.test(use_executor=True)`` the LocalExecutor
runs tasks in worker processes and deferred tasks wait in a real triggerer, as in a Deployment
(https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/debug.html). The api-server serves the Execution API the workers talk to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).resolve().parent / "airflow_config"
READY_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_environment(home: Path, dags_folder: Path, port: int) -> dict[str, str]:
    """Settings for the driver, the api-server, the triggerer and the executor's workers alike."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API_AUTH__JWT_SECRET": "remote-agents-benchmark",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # The triggerer checks for new triggers every `job_heartbeat_sec`; 1 s keeps pick-up latency low.
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "PATH": f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }


def prepare_home(home: Path) -> None:
    """The benchmark's cluster policy in ``$AIRFLOW_HOME/config``: Airflow reads it once, when first
    imported, so this must run before anything in the driver imports Airflow (the LocalExecutor's
    workers are forked from the driver and inherit its settings)."""
    (home / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG / "airflow_local_settings.py", home / "config" / "airflow_local_settings.py")


class AirflowServices:
    """``airflow db migrate``, then an api-server and a triggerer in the background; ``stop()`` ends both."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home = home
        self.env = env
        self.port = port
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> AirflowServices:
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True, capture_output=True, cwd=ROOT)
        self._spawn("api-server", ["api-server", "--port", str(self.port), "--workers", "1"])
        self._spawn("triggerer", ["triggerer"])
        self._wait_healthy()
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "airflow", *args], env=self.env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        ))

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        status: object = None
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            try:
                status = httpx.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2).json()
                if status.get("triggerer", {}).get("status") == "healthy":  # type: ignore[union-attr]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        logs = "\n".join((self.home / f"{n}.log").read_text()[-3000:] for n in ("api-server", "triggerer"))
        raise RuntimeError(f"api-server/triggerer not healthy within {READY_TIMEOUT:.0f} s (last: {status}):\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        self.processes.clear()
