"""The HTTP side: routing of Kubernetes REST paths, watches, the /sandbox admin API, and KubeEmulator."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox.kube import kinds
from sandbox.kube.faults import Faults
from sandbox.kube.kinds import Kind, find_kind, kind_for_path
from sandbox.kube.store import ApiError, Store, parse_body
from sandbox.kube.workloads import WorkloadController

log = logging.getLogger(__name__)

MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# An injected error's reason and message start as kube-apiserver's own (k8s.io/apimachinery/pkg/api/errors:
# NewInternalError, NewServiceUnavailable as client-go prints it, NewTooManyRequests), so clients that
# read the message, as helm's users do, see what a real server would make them see.
INJECTED_ERRORS = {
    403: ("Forbidden", ""),
    404: ("NotFound", ""),
    429: ("TooManyRequests", "Too many requests: "),
    500: ("InternalError", "Internal error occurred: "),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request: "),
}
WATCH_TICK_SECONDS = 0.1
MAX_WATCH_SECONDS = 600.0


@dataclass(frozen=True)
class Mutation:
    """One mutating API request that reached the API (admin and fault-failed requests are not recorded)."""

    method: str
    path: str
    kind: str
    namespace: str
    name: str
    field_manager: str
    user_agent: str
    status: int
    dry_run: bool
    time: float


@dataclass(frozen=True)
class Route:
    kind: Kind
    namespace: str
    name: str
    subresource: str


def parse_route(path: str) -> Route | None:
    """`/api/v1/namespaces/ns/secrets/x` or `/apis/apps/v1/deployments` into a Route."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        scoped = kind_for_path(group, version, rest[2])
        if scoped is not None and scoped.namespaced:
            namespace, rest = rest[1], rest[2:]
    kind = kind_for_path(group, version, rest[0])
    if kind is None or len(rest) > 3:
        return None
    return Route(kind, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


class KubeEmulator:
    """An in-memory Kubernetes API server on loopback; see the package docstring for the full API."""

    def __init__(self, kubernetes_version: str = "1.33", ready_delay: float = 1.0) -> None:
        self.kubernetes_version = kubernetes_version
        self.lock = threading.RLock()  # guards the store, the controller and the mutation log
        self.faults = Faults()
        self.store = Store(kubernetes_version)
        self.controller = WorkloadController(self.store, self.faults, ready_delay)
        self._mutations: list[Mutation] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def ready_delay(self) -> float:
        return self.controller.ready_delay

    @ready_delay.setter
    def ready_delay(self, seconds: float) -> None:
        self.controller.ready_delay = seconds

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        handler = type("BoundHandler", (Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.stopping.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="kube-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()  # ends open watches
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: str | os.PathLike[str], context: str = "sandbox",
                         namespace: str | None = None) -> Path:
        """A kubeconfig (mode 0600) pointing at this emulator over plain http."""
        context_body: dict[str, Any] = {"cluster": context, "user": context}
        if namespace:
            context_body["namespace"] = namespace
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "sandbox"}}],
            "contexts": [{"name": context, "context": context_body}],
            "current-context": context,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(config, handle)
        return target

    # --- observability -----------------------------------------------------------------------
    @property
    def mutations(self) -> list[Mutation]:
        with self.lock:
            return list(self._mutations)

    def reset_counters(self) -> None:
        with self.lock:
            self._mutations.clear()

    def record(self, mutation: Mutation) -> None:
        with self.lock:
            self._mutations.append(mutation)

    def get_object(self, kind: str, name: str, namespace: str = "", api_version: str | None = None) -> dict[str, Any] | None:
        """The stored object (a copy), or None. `kind` may be a kind, plural or short name."""
        with self.lock:
            self.controller.reconcile()
            found = self.store.find(find_kind(kind, api_version), namespace, name)
            return None if found is None else json.loads(json.dumps(found))

    def list_objects(self, kind: str, namespace: str | None = None, api_version: str | None = None,
                     label_selector: str = "") -> list[dict[str, Any]]:
        with self.lock:
            self.controller.reconcile()
            return self.store.list(find_kind(kind, api_version), namespace, label_selector)

    def reset(self) -> None:
        """Empty the store (back to the built-in namespaces), the mutation log and the faults."""
        with self.lock:
            self.store.reset()
            self.controller.reset()
            self._mutations.clear()
        self.faults.clear()


class Handler(BaseHTTPRequestHandler):
    emulator: KubeEmulator  # set on the per-emulator subclass, so two emulators never share state
    protocol_version = "HTTP/1.1"  # keep-alive, as client-go expects
    query: dict[str, str]

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes; without this, Nagle + delayed ACK add 40 ms each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_PATCH(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- plumbing ----------------------------------------------------------------------------
    def dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith("/sandbox/"):
            self.handle_admin(url.path, body)
            return
        delay = self.emulator.faults.latency(url.path)
        if delay:
            time.sleep(delay)
        injected = self.emulator.faults.take_error(self.command, url.path)
        if injected is not None:
            reason, meaning = INJECTED_ERRORS.get(injected, ("InternalError", ""))
            self.send_json(injected, ApiError(injected, reason, f"{meaning}sandbox fault: injected {injected}").status())
            return
        route = parse_route(url.path)
        if route is None:
            self.handle_static(url.path)
            return
        status, result = self.handle_resource(route, body)
        if self.command in MUTATING_METHODS:
            self.record(route, status, result, body)
        if result is not None:
            self.send_json(status, result)

    def send_json(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()

    def record(self, route: Route, status: int, result: Any, body: bytes) -> None:
        name = route.name or ((result or {}).get("metadata") or {}).get("name", "")
        user_agent = self.headers.get("User-Agent", "")
        self.emulator.record(Mutation(
            method=self.command, path=self.path, kind=route.kind.kind, namespace=route.namespace, name=name,
            field_manager=self.query.get("fieldManager") or user_agent.split("/")[0], user_agent=user_agent,
            status=status, dry_run=self.query.get("dryRun") == "All", time=time.time(),
        ))

    # --- discovery and other static documents --------------------------------------------------
    def handle_static(self, path: str) -> None:
        path = path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        document: Any = None
        if path == "/version":
            document = kinds.version_info(self.emulator.kubernetes_version)
        elif path in ("/healthz", "/livez", "/readyz"):
            self.send_text("ok")
            return
        elif path == "/api":
            document = kinds.core_versions()
        elif path == "/apis":
            document = kinds.group_list()
        elif path == "/api/v1":
            document = kinds.resource_list("", "v1")
        elif len(parts) == 3 and parts[0] == "apis":
            document = kinds.resource_list(parts[1], parts[2])
        elif path == "/openapi/v3":
            document = kinds.openapi_root()
        elif parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
            group, version = ("", parts[3]) if parts[2] == "api" else (parts[3], parts[4] if len(parts) == 5 else "")
            document = kinds.openapi_group_version(group, version)
        if document is None:
            self.send_json(404, ApiError(404, "NotFound", "the server could not find the requested resource").status())
        else:
            self.send_json(200, document)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    # --- the resource API --------------------------------------------------------------------
    def handle_resource(self, route: Route, raw: bytes) -> tuple[int, Any]:
        """Returns (status, body); body None means the response was already streamed (watch)."""
        if self.command == "GET" and not route.name and self.query.get("watch", "").lower() in ("true", "1"):
            self.stream_watch(route)
            return 200, None
        try:
            return self.call_store(route, raw)
        except ApiError as error:
            return error.code, error.status()

    def call_store(self, route: Route, raw: bytes) -> tuple[int, Any]:
        dry_run = self.query.get("dryRun") == "All"
        if route.subresource not in ("", "status"):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({route.subresource})")
        if route.kind.namespaced and route.name and not route.namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body = parse_body(raw, self.content_type()) if self.command in ("POST", "PUT", "PATCH") else None
        with self.emulator.lock:
            self.emulator.controller.reconcile()
            result = self.run_operation(route, body, dry_run)
            if self.command in MUTATING_METHODS:
                self.emulator.controller.reconcile()  # children of a new workload exist from its creation on
            return result

    def run_operation(self, route: Route, body: Any, dry_run: bool) -> tuple[int, Any]:
        store, kind, query = self.emulator.store, route.kind, self.query
        if self.command == "GET" and route.name:
            return 200, store.get(kind, route.namespace, route.name)
        if self.command == "GET":
            items = store.list(kind, route.namespace or None, query.get("labelSelector", ""),
                               query.get("fieldSelector", ""))
            return 200, store.list_body(kind, items)
        if self.command == "POST" and not route.name:
            if kind.namespaced and not route.namespace:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 201, store.create(kind, route.namespace, body, dry_run)
        if self.command == "PUT" and route.name:
            return 200, store.replace(kind, route.namespace, route.name, body, dry_run, route.subresource)
        if self.command == "PATCH" and route.name:
            existed = store.find(kind, route.namespace, route.name) is not None
            result = store.patch(kind, route.namespace, route.name, self.content_type(), body, dry_run,
                                 query.get("fieldManager", ""), route.subresource)
            return (200 if existed else 201), result
        if self.command == "DELETE" and route.name:
            return 200, store.delete(kind, route.namespace, route.name, dry_run)
        raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported on {self.path}")

    def stream_watch(self, route: Route) -> None:
        """Poll the store and stream ADDED/MODIFIED/DELETED events as JSON lines, chunked."""
        timeout = min(float(self.query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        since = int(self.query.get("resourceVersion") or 0)
        initial_events = self.query.get("sendInitialEvents", "").lower() == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        seen = self.watch_snapshot(route)
        try:
            for obj in seen.values():
                if initial_events or since == 0 or int(obj["metadata"]["resourceVersion"]) > since:
                    self.send_event("ADDED", obj)
            if initial_events:
                self.send_event("BOOKMARK", {"kind": route.kind.kind, "apiVersion": route.kind.api_version,
                                             "metadata": {"resourceVersion": str(self.emulator.store.revision),
                                                          "annotations": {"k8s.io/initial-events-end": "true"}}})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not self.emulator.stopping.wait(WATCH_TICK_SECONDS):
                current = self.watch_snapshot(route)
                for key, obj in current.items():
                    if key not in seen:
                        self.send_event("ADDED", obj)
                    elif obj["metadata"]["resourceVersion"] != seen[key]["metadata"]["resourceVersion"]:
                        self.send_event("MODIFIED", obj)
                for key in seen.keys() - current.keys():
                    self.send_event("DELETED", seen[key])
                seen = current
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; that ends a watch
        self.close_connection = True

    def watch_snapshot(self, route: Route) -> dict[tuple[str, str], dict[str, Any]]:
        with self.emulator.lock:
            self.emulator.controller.reconcile()
            items = self.emulator.store.list(route.kind, route.namespace or None,
                                             self.query.get("labelSelector", ""), self.query.get("fieldSelector", ""))
        return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in items}

    def send_event(self, kind: str, obj: dict[str, Any]) -> None:
        line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    # --- /sandbox admin API --------------------------------------------------------------------
    def handle_admin(self, path: str, raw: bytes) -> None:
        emulator, faults = self.emulator, self.emulator.faults
        args = json.loads(raw) if raw else {}
        route = (self.command, path.rstrip("/"))
        try:
            if route == ("GET", "/sandbox/mutations"):
                mutations = [asdict(m) for m in emulator.mutations]
                self.send_json(200, {"count": len(mutations), "mutations": mutations})
            elif route == ("DELETE", "/sandbox/mutations"):
                emulator.reset_counters()
                self.send_json(200, {"count": 0, "mutations": []})
            elif route == ("GET", "/sandbox/objects"):
                items = emulator.list_objects(self.query["kind"], self.query.get("namespace"),
                                              self.query.get("apiVersion"), self.query.get("labelSelector", ""))
                self.send_json(200, {"items": items})
            elif route == ("GET", "/sandbox/faults"):
                self.send_json(200, faults.describe())
            elif route == ("DELETE", "/sandbox/faults"):
                faults.clear()
                self.send_json(200, faults.describe())
            elif route == ("POST", "/sandbox/faults/never-ready"):
                faults.never_ready(**args)
                self.send_json(201, faults.describe())
            elif route == ("POST", "/sandbox/faults/fail-requests"):
                faults.fail_requests(**args)
                self.send_json(201, faults.describe())
            elif route == ("POST", "/sandbox/faults/latency"):
                faults.add_latency(**args)
                self.send_json(201, faults.describe())
            elif route == ("POST", "/sandbox/reset"):
                emulator.reset()
                self.send_json(200, {"reset": True})
            elif route == ("GET", "/sandbox/config"):
                self.send_json(200, {"kubernetes_version": emulator.kubernetes_version,
                                     "ready_delay": emulator.ready_delay})
            elif route == ("PUT", "/sandbox/config"):
                emulator.ready_delay = float(args["ready_delay"])
                self.send_json(200, {"kubernetes_version": emulator.kubernetes_version,
                                     "ready_delay": emulator.ready_delay})
            else:
                self.send_json(404, {"error": f"no admin endpoint {self.command} {path}"})
        except (TypeError, ValueError, KeyError) as error:
            self.send_json(400, {"error": f"{type(error).__name__}: {error}"})
