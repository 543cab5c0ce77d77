"""AirflowRestClient against a loopback HTTP server that fails the way a restarting API server does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from remote_agents.hooks.deployment import AirflowRestClient


class FlakyApi(BaseHTTPRequestHandler):
    """Answers ``failures`` 500s (a busy metadata database), then the run state."""

    failures = 0
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        FlakyApi.calls += 1
        failing = FlakyApi.calls <= FlakyApi.failures
        body = {"detail": "Database error"} if failing else {"state": "success"}
        payload = json.dumps(body).encode()
        self.send_response(500 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FlakyApi.calls = 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_passing_server_error_is_tried_again(api: str) -> None:
    FlakyApi.failures = 2
    with AirflowRestClient(api, token="t") as client:
        assert client.run_state("d", "r") == "success"
    assert FlakyApi.calls == 3


def test_a_lasting_server_error_is_reported_after_three_attempts(api: str) -> None:
    FlakyApi.failures = 99
    with AirflowRestClient(api, token="t") as client, pytest.raises(httpx.HTTPStatusError, match="-> 500"):
        client.run_state("d", "r")
    assert FlakyApi.calls == 3
