"""A webhook sink on loopback: records every JSON body POSTed to it (the health notifier's target)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookSink:
    """``start()``, point a Connection at ``url``, read ``messages`` (and each one's request ``headers``);
    ``fail_next(status)`` to refuse one."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("WebhookSink is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def start(self) -> WebhookSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = sink._take_failure()
                if status is None:
                    sink._record(json.loads(body or b"null"), dict(self.headers.items()))
                self.send_response(status or 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook-sink", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.headers.clear()
            self._failures.clear()

    def fail_next(self, status: int = 500) -> None:
        with self._lock:
            self._failures.append(status)

    def _record(self, message: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.messages.append(message)
            self.headers.append(headers)

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None
