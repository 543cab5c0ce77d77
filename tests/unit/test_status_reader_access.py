"""An environment whose Dags the caller may not read is left out, against a real HTTP server.

The server answers like Airflow's REST API for a user with access to one environment's Dags only:
403 for the other's, 404 for a Dag it does not have, empty run lists for the readable one.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from remote_agents.environments import environment_files
from remote_agents.hooks.deployment import AirflowRestClient
from remote_agents.status_reader import StatusApiError, read_readable_status, read_status

ROOT = Path(__file__).resolve().parents[2]


class _OneEnvironmentOnly(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if "__tutorial" in self.path:
            self._answer(403, {"detail": "Forbidden"})
        elif self.path.startswith("/api/v2/dags/remote_agents_bootstrap__sandbox/dagRuns"):
            self._answer(200, {"dag_runs": [], "total_entries": 0})
        else:
            self._answer(404, {"detail": "Dag not found"})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass  # keeps the test output to pytest's


@pytest.fixture()
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OneEnvironmentOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_forbidden_environment_has_no_row(api: str, tmp_path: Path) -> None:
    for name in ("sandbox.yaml", "tutorial.yaml"):
        shutil.copy(ROOT / "include" / "environments" / name, tmp_path)

    with AirflowRestClient(api, "a-token") as client:
        statuses = read_readable_status(client, environment_files(tmp_path), datetime.now(UTC))

    assert [status.name for status in statuses] == ["sandbox"]
    assert statuses[0].never_bootstrapped


def test_the_cli_reader_still_fails_on_a_refusal(api: str, tmp_path: Path) -> None:
    shutil.copy(ROOT / "include" / "environments" / "tutorial.yaml", tmp_path)

    with AirflowRestClient(api, "a-token") as client, pytest.raises(StatusApiError) as raised:
        read_status(client, environment_files(tmp_path), datetime.now(UTC))

    assert raised.value.status_code == 403
