"""An emulator of the Astro Platform API v1 endpoints our operators call, on loopback.

Seeded from Python with one organization, its API token and its deployments; it keeps deployments,
agent tokens and Deployment API tokens in memory. Shapes follow the public v1 spec
(/work/shared/reference/astro-remote-execution.md, section 5.1); the emulator is lenient where the
real API demands fields we never send (an update may carry only what changes).

Behaviour worth knowing:
- Auth: no `Authorization: Bearer …` header -> 401; any bearer other than the seeded API token -> 403.
  Tokens created through the API (agent or Deployment API tokens) do not authenticate to this API.
- Unknown organization, deployment or token id -> 404. Errors are `{"message", "statusCode", "requestId"}`.
- At most `max_agent_tokens` (default 50, the Astro default) live agent tokens per deployment; one
  more is refused with **400** and a message naming the limit (Astro documents the limit, not the code).
- A token's value appears only in the create (and rotate) response; deleting or rotating revokes it.

HTTP admin API (outside /v1, no auth, JSON):
    GET    /sandbox/state                       deployments, live agent/API tokens (with values), revoked tokens
    POST   /sandbox/agent-tokens/validate       {"token": "..."} -> {"valid", "deploymentId", "tokenId"};
                                                a hit sets the token's lastUsedAt
    GET    /sandbox/requests                    {"calls": [{"method", "path", "mutating"}, ...]}
    DELETE /sandbox/requests                    clear the request log
    POST   /sandbox/faults/errors               {"path": "/v1/organizations/*/deployments/*" (fnmatch glob),
                                                 "method": null, "status": 500, "count": 1}
    POST   /sandbox/faults/latency              {"seconds": 0.5}
    DELETE /sandbox/faults                      clear all faults
    POST   /sandbox/reset                       back to the seeded state
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

DEFAULT_MAX_AGENT_TOKENS = 50
ADMIN_PATH_PREFIX = "/sandbox/"
_READ_METHODS = frozenset({"GET", "HEAD"})
_DEPLOYMENT_ROLES = frozenset({"DEPLOYMENT_ADMIN"})

_ORG = "/v1/organizations/<org>"
_ROUTES = Map(
    [
        Rule(f"{_ORG}/deployments", methods=["GET"], endpoint="list_deployments"),
        Rule(f"{_ORG}/deployments/<dep>", methods=["GET"], endpoint="get_deployment"),
        Rule(f"{_ORG}/deployments/<dep>", methods=["POST"], endpoint="update_deployment"),
        Rule(f"{_ORG}/deployments/<dep>/agent-tokens", methods=["GET"], endpoint="list_agent_tokens"),
        Rule(f"{_ORG}/deployments/<dep>/agent-tokens", methods=["POST"], endpoint="create_agent_token"),
        Rule(f"{_ORG}/deployments/<dep>/agent-tokens/<token_id>", methods=["GET"], endpoint="get_agent_token"),
        Rule(f"{_ORG}/deployments/<dep>/agent-tokens/<token_id>", methods=["DELETE"], endpoint="delete_agent_token"),
        Rule(f"{_ORG}/tokens", methods=["GET"], endpoint="list_api_tokens"),
        Rule(f"{_ORG}/tokens", methods=["POST"], endpoint="create_api_token"),
        Rule(f"{_ORG}/tokens/<token_id>", methods=["GET"], endpoint="get_api_token"),
        Rule(f"{_ORG}/tokens/<token_id>", methods=["DELETE"], endpoint="delete_api_token"),
        Rule(f"{_ORG}/tokens/<token_id>/rotate", methods=["POST"], endpoint="rotate_api_token"),
    ]
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment else None


def _new_id() -> str:
    # Astro ids are 25-character lowercase cuid strings, e.g. "clm8t5u4q000008l5d9ek3n6m".
    return "cl" + uuid.uuid4().hex[:23]


@dataclass
class Deployment:
    id: str
    name: str = ""
    workspace_id: str = "sandbox-workspace"
    cluster_id: str = "sandbox-cluster"
    status: str = "HEALTHY"
    namespace: str = ""
    remote_api_url: str = ""
    remote_execution_enabled: bool = True
    allowed_ip_address_ranges: list[str] = field(default_factory=list)
    task_log_bucket: str | None = None
    task_log_url_pattern: str | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.id
        self.namespace = self.namespace or f"sandbox-{self.id}"
        # The shape the chart's astroDeploymentAPIURL takes on Astro; seed a local URL for stand-in agents.
        self.remote_api_url = self.remote_api_url or f"https://{self.cluster_id}.external.astronomer.run/{self.id}"

    def to_json(self, organization_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "organizationId": organization_id,
            "workspaceId": self.workspace_id,
            "clusterId": self.cluster_id,
            "type": "DEDICATED",
            "executor": "ASTRO",
            "status": self.status,
            "namespace": self.namespace,
            "isDagDeployEnabled": False,
            "remoteExecution": {
                "enabled": self.remote_execution_enabled,
                "allowedIpAddressRanges": list(self.allowed_ip_address_ranges),
                "remoteApiUrl": self.remote_api_url,
                "taskLogBucket": self.task_log_bucket,
                "taskLogUrlPattern": self.task_log_url_pattern,
            },
        }

    def apply_remote_execution(self, request: Mapping[str, Any]) -> None:
        if not isinstance(request.get("enabled"), bool):
            raise ApiError(400, "remoteExecution.enabled is required and must be a boolean")
        self.remote_execution_enabled = request["enabled"]
        self.allowed_ip_address_ranges = list(request.get("allowedIpAddressRanges") or [])
        self.task_log_bucket = request.get("taskLogBucket")
        self.task_log_url_pattern = request.get("taskLogUrlPattern")


@dataclass
class Token:
    """An agent token (`kind="agent"`) or a Deployment API token (`kind="api"`)."""

    id: str
    kind: str
    name: str
    description: str
    deployment_id: str
    value: str
    role: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= _now()

    def to_json(self, organization_id: str, *, with_value: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "shortToken": self.value[:7],
            "type": "AGENT" if self.kind == "agent" else "DEPLOYMENT",
            "createdAt": _timestamp(self.created_at),
            "updatedAt": _timestamp(self.created_at),
            "startAt": _timestamp(self.created_at),
            "endAt": _timestamp(self.expires_at),
            "lastUsedAt": _timestamp(self.last_used_at),
            "roles": [{"entityId": self.deployment_id, "entityType": "DEPLOYMENT", "role": self.role}],
        }
        if self.kind == "api":
            body["organizationId"] = organization_id
        if with_value:
            body["token"] = self.value
        return body


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    mutating: bool


@dataclass
class _ErrorFault:
    path_glob: str
    method: str | None
    status: int
    remaining: int


class AstroEmulator:
    """Astro Platform API v1 on loopback. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(
        self,
        *,
        api_token: str,
        organization_id: str,
        deployments: Iterable[Deployment | Mapping[str, Any]] = (),
        max_agent_tokens: int = DEFAULT_MAX_AGENT_TOKENS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_token = api_token
        self.organization_id = organization_id
        self.max_agent_tokens = max_agent_tokens
        self._seed = [d if isinstance(d, Deployment) else Deployment(**d) for d in deployments]
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AstroEmulator:
        self._server = make_server(self._host, self._port, self._wsgi_app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="astro-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AstroEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the seeded deployments; no tokens, faults or logged calls."""
        with self._lock:
            self._deployments = {d.id: dataclasses.replace(d) for d in self._seed}
            self._tokens: dict[str, Token] = {}
            self._revoked: list[Token] = []
            self._faults: list[_ErrorFault] = []
            self._latency = 0.0
            self._calls: list[ApiCall] = []

    @property
    def url(self) -> str:
        """Base URL of the API, ending in /v1, as a hook's host would be configured."""
        if self._server is None:
            raise RuntimeError("AstroEmulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- inspection (tests, stand-in agents) -----------------------------------------------

    def deployment(self, deployment_id: str) -> Deployment:
        with self._lock:
            return dataclasses.replace(self._deployments[deployment_id])

    def live_agent_tokens(self, deployment_id: str | None = None) -> list[Token]:
        return self._live_tokens("agent", deployment_id)

    def live_api_tokens(self, deployment_id: str | None = None) -> list[Token]:
        return self._live_tokens("api", deployment_id)

    @property
    def revoked_tokens(self) -> list[Token]:
        with self._lock:
            return list(self._revoked)

    def validate_agent_token(self, value: str) -> Token | None:
        """The live agent token with this value, or None; a hit counts as use (sets lastUsedAt)."""
        with self._lock:
            for token in self._tokens.values():
                if token.kind == "agent" and token.value == value and not token.expired:
                    token.last_used_at = _now()
                    return dataclasses.replace(token)
        return None

    def is_live_agent_token(self, value: str, deployment_id: str | None = None) -> bool:
        token = self.validate_agent_token(value)
        return token is not None and deployment_id in (None, token.deployment_id)

    @property
    def calls(self) -> list[ApiCall]:
        with self._lock:
            return list(self._calls)

    @property
    def mutating_calls(self) -> list[ApiCall]:
        return [call for call in self.calls if call.mutating]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def state(self) -> dict[str, Any]:
        org = self.organization_id
        with self._lock:
            return {
                "deployments": [d.to_json(org) for d in self._deployments.values()],
                "agentTokens": [self._token_state(t) for t in self._tokens.values() if t.kind == "agent"],
                "apiTokens": [self._token_state(t) for t in self._tokens.values() if t.kind == "api"],
                "revokedTokens": [self._token_state(t) for t in self._revoked],
            }

    # -- faults ----------------------------------------------------------------------------

    def fail(self, path_glob: str, *, status: int = 500, count: int = 1, method: str | None = None) -> None:
        """Answer the next `count` requests whose path matches `path_glob` (fnmatch) with `status`."""
        with self._lock:
            self._faults.append(_ErrorFault(path_glob, method.upper() if method else None, status, count))

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency = 0.0

    # -- HTTP ------------------------------------------------------------------------------

    def _wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        request_id = str(uuid.uuid4())
        if request.path.startswith(ADMIN_PATH_PREFIX):
            status, body = self._handle_admin(request)
        else:
            status, body = self._handle_api(request)
        if status >= 400:
            body = {"message": body["message"], "statusCode": status, "requestId": request_id}
        content = b"" if status == 204 else json.dumps(body).encode()
        response = Response(content, status, {"X-Request-Id": request_id}, content_type="application/json")
        return response(environ, start_response)

    def _handle_api(self, request: Request) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._calls.append(ApiCall(request.method, request.path, request.method not in _READ_METHODS))
            latency = self._latency
            injected = self._take_fault(request)
        time.sleep(latency)  # outside the lock, so a slow call does not stall the others
        if injected is not None:
            return injected, {"message": "Injected fault: internal server error"}
        try:
            self._authenticate(request)
            endpoint, args = _ROUTES.bind_to_environ(request.environ).match()
            with self._lock:
                return getattr(self, f"_{endpoint}")(request, **args)
        except ApiError as error:
            return error.status, {"message": error.message}
        except MethodNotAllowed:
            return 405, {"message": f"method {request.method} not allowed on {request.path}"}
        except NotFound:
            return 404, {"message": f"no such route: {request.path}"}

    def _take_fault(self, request: Request) -> int | None:
        for fault in self._faults:
            if fault.remaining > 0 and fnmatch.fnmatchcase(request.path, fault.path_glob):
                if fault.method in (None, request.method):
                    fault.remaining -= 1
                    return fault.status
        return None

    def _authenticate(self, request: Request) -> None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise ApiError(401, "Unauthorized: missing bearer token")
        if not secrets.compare_digest(credential.strip(), self.api_token):
            raise ApiError(403, "Forbidden: the token is not valid for this organization")

    # -- API endpoints (called with the lock held) -----------------------------------------

    def _list_deployments(self, request: Request, org: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        deployments = [d.to_json(org) for d in self._deployments.values()]
        return 200, _page("deployments", deployments, request)

    def _get_deployment(self, request: Request, org: str, dep: str) -> tuple[int, dict[str, Any]]:
        return 200, self._deployment(org, dep).to_json(org)

    def _update_deployment(self, request: Request, org: str, dep: str) -> tuple[int, dict[str, Any]]:
        deployment = self._deployment(org, dep)
        body = _json_body(request)
        if "remoteExecution" in body:
            deployment.apply_remote_execution(body["remoteExecution"] or {})
        deployment.name = body.get("name", deployment.name)
        return 200, deployment.to_json(org)

    def _list_agent_tokens(self, request: Request, org: str, dep: str) -> tuple[int, dict[str, Any]]:
        self._deployment(org, dep)
        tokens = [t.to_json(org) for t in self._tokens.values() if t.kind == "agent" and t.deployment_id == dep]
        return 200, _page("tokens", tokens, request)

    def _create_agent_token(self, request: Request, org: str, dep: str) -> tuple[int, dict[str, Any]]:
        self._deployment(org, dep)
        if len(self._live_tokens("agent", dep)) >= self.max_agent_tokens:
            raise ApiError(400, f"Deployment {dep} already has the maximum of {self.max_agent_tokens} agent tokens")
        token = self._issue_token("agent", dep, _json_body(request), role=None)
        return 200, token.to_json(org, with_value=True)

    def _get_agent_token(self, request: Request, org: str, dep: str, token_id: str) -> tuple[int, dict[str, Any]]:
        self._deployment(org, dep)
        return 200, self._token("agent", token_id, dep).to_json(org)

    def _delete_agent_token(self, request: Request, org: str, dep: str, token_id: str) -> tuple[int, dict[str, Any]]:
        self._deployment(org, dep)
        self._revoke(self._token("agent", token_id, dep))
        return 204, {}

    def _list_api_tokens(self, request: Request, org: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        wanted = request.args.get("deploymentId")
        tokens = [t.to_json(org) for t in self._live_tokens("api", wanted)]
        return 200, _page("tokens", tokens, request)

    def _create_api_token(self, request: Request, org: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        body = _json_body(request)
        if body.get("type") != "DEPLOYMENT":
            raise ApiError(400, f"type must be DEPLOYMENT (the only token type emulated), got {body.get('type')!r}")
        if body.get("role") not in _DEPLOYMENT_ROLES:
            raise ApiError(400, f"role must be one of {sorted(_DEPLOYMENT_ROLES)}, got {body.get('role')!r}")
        deployment = self._deployment(org, str(body.get("entityId")))
        token = self._issue_token("api", deployment.id, body, role=body["role"])
        return 200, token.to_json(org, with_value=True)

    def _get_api_token(self, request: Request, org: str, token_id: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        return 200, self._token("api", token_id).to_json(org)

    def _delete_api_token(self, request: Request, org: str, token_id: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        self._revoke(self._token("api", token_id))
        return 204, {}

    def _rotate_api_token(self, request: Request, org: str, token_id: str) -> tuple[int, dict[str, Any]]:
        self._organization(org)
        token = self._token("api", token_id)
        self._revoked.append(dataclasses.replace(token))
        token.value = _new_token_value()
        return 200, token.to_json(org, with_value=True)

    # -- helpers ---------------------------------------------------------------------------

    def _organization(self, org: str) -> None:
        if org != self.organization_id:
            raise ApiError(404, f"Organization {org} not found")

    def _deployment(self, org: str, dep: str) -> Deployment:
        self._organization(org)
        if dep not in self._deployments:
            raise ApiError(404, f"Deployment {dep} not found")
        return self._deployments[dep]

    def _token(self, kind: str, token_id: str, deployment_id: str | None = None) -> Token:
        token = self._tokens.get(token_id)
        if token is None or token.kind != kind or deployment_id not in (None, token.deployment_id):
            raise ApiError(404, f"Token {token_id} not found")
        return token

    def _live_tokens(self, kind: str, deployment_id: str | None) -> list[Token]:
        with self._lock:
            return [
                dataclasses.replace(t)
                for t in self._tokens.values()
                if t.kind == kind and deployment_id in (None, t.deployment_id) and not t.expired
            ]

    def _issue_token(self, kind: str, deployment_id: str, body: Mapping[str, Any], role: str | None) -> Token:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "name is required and must be a non-empty string")
        expiry_days = body.get("tokenExpiryPeriodInDays")
        if expiry_days is not None and not (isinstance(expiry_days, int) and 1 <= expiry_days <= 3650):
            raise ApiError(400, f"tokenExpiryPeriodInDays must be an integer from 1 to 3650, got {expiry_days!r}")
        created = _now()
        token = Token(
            id=_new_id(),
            kind=kind,
            name=name,
            description=str(body.get("description") or ""),
            deployment_id=deployment_id,
            value=_new_token_value(),
            role=role,
            created_at=created,
            expires_at=created + timedelta(days=expiry_days) if expiry_days else None,
        )
        self._tokens[token.id] = token
        return token

    def _revoke(self, token: Token) -> None:
        self._revoked.append(self._tokens.pop(token.id))

    def _token_state(self, token: Token) -> dict[str, Any]:
        return {**token.to_json(self.organization_id, with_value=True), "deploymentId": token.deployment_id}

    # -- admin endpoints -------------------------------------------------------------------

    def _handle_admin(self, request: Request) -> tuple[int, dict[str, Any]]:
        route = (request.method, request.path.removeprefix(ADMIN_PATH_PREFIX))
        try:
            return 200, self._admin_reply(route, _json_body(request) if request.method == "POST" else {})
        except (ApiError, KeyError, TypeError, ValueError) as error:
            status = error.status if isinstance(error, ApiError) else 400
            return status, {"message": str(error)}
        except HTTPException as error:
            return error.code or 500, {"message": str(error.description)}

    def _admin_reply(self, route: tuple[str, str], body: Mapping[str, Any]) -> dict[str, Any]:
        if route == ("GET", "state"):
            return self.state()
        if route == ("POST", "agent-tokens/validate"):
            token = self.validate_agent_token(str(body["token"]))
            return {
                "valid": token is not None,
                "deploymentId": token.deployment_id if token else None,
                "tokenId": token.id if token else None,
            }
        if route == ("GET", "requests"):
            return {"calls": [dataclasses.asdict(call) for call in self.calls]}
        if route == ("DELETE", "requests"):
            self.clear_calls()
        elif route == ("POST", "faults/errors"):
            self.fail(body["path"], status=int(body.get("status", 500)), count=int(body.get("count", 1)),
                      method=body.get("method"))
        elif route == ("POST", "faults/latency"):
            self.add_latency(float(body["seconds"]))
        elif route == ("DELETE", "faults"):
            self.clear_faults()
        elif route == ("POST", "reset"):
            self.reset()
        else:
            raise NotFound(f"no admin route {route[0]} {ADMIN_PATH_PREFIX}{route[1]}")
        return {"status": "ok"}


def _new_token_value() -> str:
    return secrets.token_urlsafe(48)


def _json_body(request: Request) -> dict[str, Any]:
    if not request.get_data():
        return {}
    try:
        body = json.loads(request.get_data())
    except ValueError as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _page(key: str, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """Offset/limit pagination as in the v1 list endpoints (limit at most 1000)."""
    try:
        offset = int(request.args.get("offset", 0))
        limit = min(int(request.args.get("limit", 20)), 1000)
    except ValueError as error:
        raise ApiError(400, f"offset and limit must be integers: {error}") from error
    return {key: items[offset : offset + limit], "offset": offset, "limit": limit, "totalCount": len(items)}
