"""An emulator of the Astro Platform API v1 on loopback, held to the published document.

Seeded from Python with one organization, its API tokens and its deployments; it keeps deployments,
agent tokens and Deployment API tokens in memory. Every request is first checked against the pinned
public OpenAPI document (``sandbox/astro_contract.py``): an unknown path is 404, a wrong method 405,
a body or query the document refuses 400 with the API's ``Error`` shape (``message``,
``statusCode``, ``requestId``, ``fieldErrors``). Every response is checked against the document too;
one that departs from it is answered 500 and kept in ``contract_problems`` (an emulator bug).

Behaviour beyond what the document says, and why:
- Auth: no bearer token -> 401 (the document's security scheme). A token that is not seeded -> 403.
  The seeded ``api_token`` holds every permission; a ``scoped_tokens`` entry holds only the
  permissions it lists, and an operation whose ``x-permission`` it lacks is 403 naming that
  permission. Tokens created through the API do not authenticate to this API.
- Unknown organization, deployment or token id -> 404.
- At most ``max_agent_tokens`` (default 50, the Astro default) live agent tokens per deployment; one
  more is refused with 400 naming the limit (Astro documents the limit, not the code).
- A token's value appears only in the create (and rotate) response; deleting or rotating revokes it.
- A Deployment update replaces the whole settable state: a field left out is reset, an environment
  variable left out is deleted. That is how the Astro CLI treats it (it rebuilds the full body from
  a GET before every update), and it makes a partial update visible here instead of on Astro.
  A secret variable sent without a value keeps its stored value, as the CLI relies on (GET never
  returns secret values); a new secret variable without a value is refused.
- Operations of the document that no operator calls answer 501 (not emulated).

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

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from sandbox.astro_contract import (
    ApiError,
    Operation,
    check_parameters_and_body,
    check_security,
    find_operation,
    response_problems,
)

DEFAULT_MAX_AGENT_TOKENS = 50
ADMIN_PATH_PREFIX = "/sandbox/"
_READ_METHODS = frozenset({"GET", "HEAD"})
# Deployment-scoped roles: the built-in one. Custom Deployment roles (by id) are not emulated.
_DEPLOYMENT_ROLES = frozenset({"DEPLOYMENT_ADMIN"})


def _field_error(field_name: str, message: str, code: str = "invalid") -> ApiError:
    return ApiError(400, f"{field_name}: {message}", [{"code": code, "field": field_name, "message": message}])


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment else None


def _new_id() -> str:
    # Astro ids are 25-character lowercase cuid strings, e.g. "clm8t5u4q000008l5d9ek3n6m".
    return "cl" + uuid.uuid4().hex[:23]


_SEED_SUBJECT = {"id": "clsandboxseeduser00000000", "subjectType": "USER", "username": "sandbox@example.com"}


@dataclass
class Deployment:
    """A Dedicated Remote Execution Deployment, with the settings an update request carries."""

    id: str
    name: str = ""
    organization_id: str = ""  # empty: the emulator's own organization
    workspace_id: str = "sandbox-workspace"
    cluster_id: str = "sandbox-cluster"
    status: str = "HEALTHY"
    namespace: str = ""
    runtime_version: str = "3.3-1"  # the Runtime of the default agent image (spec.DEFAULT_AGENT_IMAGE)
    remote_api_url: str = ""
    remote_execution_enabled: bool = True
    allowed_ip_address_ranges: list[str] = field(default_factory=list)
    task_log_bucket: str | None = None
    task_log_url_pattern: str | None = None
    description: str = ""
    contact_emails: list[str] = field(default_factory=list)
    executor: str = "ASTRO"
    scheduler_size: str = "SMALL"
    is_cicd_enforced: bool = False
    is_dag_deploy_enabled: bool = True
    is_high_availability: bool = False
    is_development_mode: bool = False
    workload_identity: str | None = None
    # key -> (value, isSecret); secret values are stored but never returned
    environment_variables: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    updated_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        self.name = self.name or self.id
        self.namespace = self.namespace or f"sandbox-{self.id}"
        # The shape the chart's astroDeploymentAPIURL takes on Astro; seed a local URL for stand-in agents.
        self.remote_api_url = self.remote_api_url or f"https://{self.cluster_id}.external.astronomer.run/{self.id}"

    def to_json(self) -> dict[str, Any]:
        host = f"{self.cluster_id}.astronomer.run/{self.id}"
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "organizationId": self.organization_id,
            "workspaceId": self.workspace_id,
            "clusterId": self.cluster_id,
            "type": "DEDICATED",
            "executor": self.executor,
            "status": self.status,
            "namespace": self.namespace,
            "astroRuntimeVersion": self.runtime_version,
            "runtimeVersion": self.runtime_version,
            "airflowVersion": "3.1.0",
            "imageRepository": "images.astronomer.cloud/baseimages/astro-runtime",
            "imageTag": self.runtime_version,
            "apiUrl": f"https://{host}/api/v2",
            "webServerAirflowApiUrl": f"{host}/api/v2",
            "webServerUrl": host,
            "webServerIngressHostname": f"{self.cluster_id}.astronomer.run",
            "uiUrl": f"https://{host}",
            "webServerCpu": "0.5",
            "webServerMemory": "1Gi",
            "schedulerCpu": "1",
            "schedulerMemory": "2Gi",
            "schedulerReplicas": 2 if self.is_high_availability else 1,
            "schedulerSize": self.scheduler_size,
            "contactEmails": list(self.contact_emails),
            "isCicdEnforced": self.is_cicd_enforced,
            "isDagDeployEnabled": self.is_dag_deploy_enabled,
            "isHighAvailability": self.is_high_availability,
            "isDevelopmentMode": self.is_development_mode,
            "environmentVariables": [
                {"key": key, "isSecret": is_secret, "updatedAt": _timestamp(self.updated_at),
                 **({} if is_secret or value is None else {"value": value})}
                for key, (value, is_secret) in self.environment_variables.items()
            ],
            "createdAt": "2026-01-05T09:00:00Z",
            "createdBy": _SEED_SUBJECT,
            "updatedAt": _timestamp(self.updated_at),
            "updatedBy": _SEED_SUBJECT,
            "remoteExecution": {
                "enabled": self.remote_execution_enabled,
                "allowedIpAddressRanges": list(self.allowed_ip_address_ranges),
                "remoteApiUrl": self.remote_api_url,
            },
        }
        for key, value in (("taskLogBucket", self.task_log_bucket), ("taskLogUrlPattern", self.task_log_url_pattern)):
            if value is not None:
                body["remoteExecution"][key] = value
        if self.workload_identity:
            body["effectiveWorkloadIdentity"] = self.workload_identity
        return body

    def apply_update(self, request: Mapping[str, Any]) -> None:
        """Replace the settable state with a (document-valid) UpdateDedicatedDeploymentRequest."""
        if request["type"] != "DEDICATED":
            raise _field_error("type", f"this Deployment is DEDICATED, not {request['type']}")
        if request["workspaceId"] != self.workspace_id:
            # Moving a Deployment between Workspaces is not something an update does; not emulated.
            raise _field_error("workspaceId", f"must stay {self.workspace_id}")
        remote = request.get("remoteExecution")
        if self.remote_execution_enabled and (remote is None or not remote["enabled"]):
            raise _field_error("remoteExecution.enabled", "Remote Execution cannot be switched off by an update")
        variables = self._merged_variables(request["environmentVariables"])
        self.name = request["name"]
        self.description = request.get("description", "")
        self.contact_emails = list(request.get("contactEmails") or [])
        self.executor = request["executor"]
        self.scheduler_size = request["schedulerSize"]
        self.is_cicd_enforced = request["isCicdEnforced"]
        self.is_dag_deploy_enabled = request["isDagDeployEnabled"]
        self.is_high_availability = request["isHighAvailability"]
        self.is_development_mode = request.get("isDevelopmentMode", False)
        self.workload_identity = request.get("workloadIdentity", self.workload_identity)
        self.environment_variables = variables
        remote = remote or {}
        self.allowed_ip_address_ranges = list(remote.get("allowedIpAddressRanges") or [])
        self.task_log_bucket = remote.get("taskLogBucket")
        self.task_log_url_pattern = remote.get("taskLogUrlPattern")
        self.updated_at = _now()

    def _merged_variables(self, requested: list[Mapping[str, Any]]) -> dict[str, tuple[str | None, bool]]:
        merged: dict[str, tuple[str | None, bool]] = {}
        for index, variable in enumerate(requested):
            key, is_secret, value = variable["key"], variable["isSecret"], variable.get("value")
            stored = self.environment_variables.get(key)
            if key in merged:
                raise _field_error(f"environmentVariables.{index}.key", f"{key!r} is listed twice")
            if is_secret and value is None:
                if stored is None or not stored[1]:
                    raise _field_error(f"environmentVariables.{index}.value",
                                       f"secret {key!r} is new, so it needs a value", code="required")
                value = stored[0]
            merged[key] = (value, is_secret)
        return merged


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
    expiry_days: int | None = None
    last_used_at: datetime | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= _now()

    def to_json(self, *, with_value: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "shortToken": self.value[:7],
            "kind": "STANDARD",
            "scope": "DEPLOYMENT",
            "createdAt": _timestamp(self.created_at),
            "createdBy": _SEED_SUBJECT,
            "updatedAt": _timestamp(self.created_at),
            "startAt": _timestamp(self.created_at),
        }
        optional = {
            "endAt": _timestamp(self.expires_at),
            "expiryPeriodInDays": self.expiry_days,
            "lastUsedAt": _timestamp(self.last_used_at),
            # The document does not say which role an agent token holds; it is left out.
            "roles": [{"entityId": self.deployment_id, "entityType": "DEPLOYMENT", "role": self.role}]
            if self.role else None,
            "token": self.value if with_value else None,
        }
        return {**body, **{key: value for key, value in optional.items() if value is not None}}


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    mutating: bool
    status: int


@dataclass
class _ErrorFault:
    path_glob: str
    method: str | None
    status: int
    remaining: int
    after_handling: bool = False  # the request is carried out, then its answer replaced (lost on the way back)


class AstroEmulator:
    """Astro Platform API v1 on loopback. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(
        self,
        *,
        api_token: str,
        organization_id: str,
        deployments: Iterable[Deployment | Mapping[str, Any]] = (),
        scoped_tokens: Mapping[str, Iterable[str]] | None = None,
        max_agent_tokens: int = DEFAULT_MAX_AGENT_TOKENS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """:param api_token: a token holding every permission (an Organization Owner's API token)
        :param scoped_tokens: further tokens, each with only the ``x-permission`` actions listed
        """
        self.api_token = api_token
        self.scoped_tokens = {value: frozenset(actions) for value, actions in (scoped_tokens or {}).items()}
        self.organization_id = organization_id
        self.max_agent_tokens = max_agent_tokens
        self._seed = [self._in_organization(d) for d in deployments]
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    def _in_organization(self, deployment: Deployment | Mapping[str, Any]) -> Deployment:
        seeded = deployment if isinstance(deployment, Deployment) else Deployment(**deployment)
        return dataclasses.replace(seeded, organization_id=seeded.organization_id or self.organization_id)

    def add_deployment(self, deployment: Deployment | Mapping[str, Any]) -> None:
        """Seed one more Deployment (possibly of another organization); it survives ``reset()``."""
        seeded = self._in_organization(deployment)
        with self._lock:
            self._seed.append(seeded)
            self._deployments[seeded.id] = dataclasses.replace(seeded)

    def remove_deployment(self, deployment_id: str) -> None:
        with self._lock:
            self._seed = [d for d in self._seed if d.id != deployment_id]
            self._deployments.pop(deployment_id, None)

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
            self.contract_problems: list[str] = []

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
        with self._lock:
            return {
                "deployments": [d.to_json() for d in self._deployments.values()],
                "agentTokens": [self._token_state(t) for t in self._tokens.values() if t.kind == "agent"],
                "apiTokens": [self._token_state(t) for t in self._tokens.values() if t.kind == "api"],
                "revokedTokens": [self._token_state(t) for t in self._revoked],
            }

    # -- faults ----------------------------------------------------------------------------

    def fail(self, path_glob: str, *, status: int = 500, count: int = 1, method: str | None = None) -> None:
        """Answer the next `count` requests whose path matches `path_glob` (fnmatch) with `status`."""
        with self._lock:
            self._faults.append(_ErrorFault(path_glob, method.upper() if method else None, status, count))

    def lose_answers(self, path_glob: str, *, count: int = 1, method: str = "POST", status: int = 502) -> None:
        """Carry out the next `count` matching requests, then answer `status` instead, as a gateway does
        whose upstream answered too late: the client cannot know whether the call took effect."""
        with self._lock:
            self._faults.append(_ErrorFault(path_glob, method.upper(), status, count, after_handling=True))

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
            return self._response(status, body, request_id)(environ, start_response)
        status, body, operation = self._handle_api(request)
        response = self._response(status, body, request_id)
        if operation is not None and status != 501:
            problems = response_problems(request, response)
            if problems:
                with self._lock:
                    self.contract_problems.extend(f"{request.method} {request.path}: {p}" for p in problems)
                response = self._response(500, {"message": "emulator response breaks the API document: "
                                                + "; ".join(problems)}, request_id)
        with self._lock:
            self._calls.append(ApiCall(request.method, request.path, request.method not in _READ_METHODS,
                                       response.status_code))
        return response(environ, start_response)

    @staticmethod
    def _response(status: int, body: dict[str, Any], request_id: str) -> Response:
        if status >= 400:
            error = {"message": body["message"], "statusCode": status, "requestId": request_id}
            body = {**error, "fieldErrors": body["fieldErrors"]} if body.get("fieldErrors") else error
        content = b"" if status == 204 else json.dumps(body).encode()
        return Response(content, status, {"X-Request-Id": request_id}, content_type="application/json")

    def _handle_api(self, request: Request) -> tuple[int, dict[str, Any], Operation | None]:
        """The status and body of an API call, and the document's operation it matched (None if none)."""
        with self._lock:
            latency = self._latency
            injected = self._take_fault(request)
        time.sleep(latency)  # outside the lock, so a slow call does not stall the others
        if injected is not None and not injected.after_handling:
            return injected.status, {"message": "Injected fault: internal server error"}, None
        if injected is not None:
            self._handle_operation(request)
            return injected.status, {"message": "Injected fault: the answer was lost"}, None
        return self._handle_operation(request)

    def _handle_operation(self, request: Request) -> tuple[int, dict[str, Any], Operation | None]:
        try:
            operation = find_operation(request)
        except ApiError as violation:
            return violation.status, {"message": violation.message}, None
        try:
            # The order of a gateway in front of a handler: who you are, what you may do, what you sent.
            check_security(request)
            self._authorize(request, operation)
            check_parameters_and_body(request)
            handler = getattr(self, f"_{operation.operation_id}", None)
            if handler is None:
                return 501, {"message": f"{operation.operation_id} is not emulated"}, operation
            with self._lock:
                status, body = handler(request, **operation.path_params)
        except ApiError as error:
            status, body = error.status, {"message": error.message, "fieldErrors": error.field_errors}
        return status, body, operation

    def _take_fault(self, request: Request) -> _ErrorFault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fnmatch.fnmatchcase(request.path, fault.path_glob):
                if fault.method in (None, request.method):
                    fault.remaining -= 1
                    return fault
        return None

    def _authorize(self, request: Request, operation: Operation) -> None:
        _, _, credential = request.headers.get("Authorization", "").partition(" ")
        credential = credential.strip()
        if secrets.compare_digest(credential, self.api_token):
            return
        granted = self.scoped_tokens.get(credential)
        if granted is None:
            raise ApiError(403, "Forbidden: the token is not valid for this organization")
        if operation.permission and operation.permission not in granted:
            # What Astro's 403 says is not published; a client must name the permission itself.
            raise ApiError(403, "Forbidden: insufficient permissions")

    # -- API operations, by the document's operationId (called with the lock held) --------

    def _ListDeployments(self, request: Request, organizationId: str) -> tuple[int, dict[str, Any]]:
        self._organization(organizationId)
        deployments = [d.to_json() for d in self._deployments.values() if d.organization_id == organizationId]
        return 200, _page("deployments", deployments, request)

    def _GetDeployment(self, request: Request, organizationId: str, deploymentId: str) -> tuple[int, dict[str, Any]]:
        return 200, self._deployment(organizationId, deploymentId).to_json()

    def _UpdateDeployment(self, request: Request, organizationId: str,
                          deploymentId: str) -> tuple[int, dict[str, Any]]:
        deployment = self._deployment(organizationId, deploymentId)
        deployment.apply_update(request.get_json())
        return 200, deployment.to_json()

    def _ListAgentTokens(self, request: Request, organizationId: str, deploymentId: str) -> tuple[int, dict[str, Any]]:
        self._deployment(organizationId, deploymentId)
        tokens = [t.to_json() for t in self._tokens.values() if t.kind == "agent" and t.deployment_id == deploymentId]
        return 200, _page("tokens", tokens, request)

    def _CreateAgentToken(self, request: Request, organizationId: str,
                          deploymentId: str) -> tuple[int, dict[str, Any]]:
        self._deployment(organizationId, deploymentId)
        if len(self._live_tokens("agent", deploymentId)) >= self.max_agent_tokens:
            raise ApiError(400, f"Deployment {deploymentId} already has the maximum of "
                                f"{self.max_agent_tokens} agent tokens")
        token = self._issue_token("agent", deploymentId, request.get_json(), role=None)
        return 200, token.to_json(with_value=True)

    def _GetAgentToken(self, request: Request, organizationId: str, deploymentId: str,
                       agentTokenId: str) -> tuple[int, dict[str, Any]]:
        self._deployment(organizationId, deploymentId)
        return 200, self._token("agent", agentTokenId, deploymentId).to_json()

    def _DeleteAgentToken(self, request: Request, organizationId: str, deploymentId: str,
                          agentTokenId: str) -> tuple[int, dict[str, Any]]:
        self._deployment(organizationId, deploymentId)
        self._revoke(self._token("agent", agentTokenId, deploymentId))
        return 204, {}

    def _ListApiTokens(self, request: Request, organizationId: str) -> tuple[int, dict[str, Any]]:
        self._organization(organizationId)
        tokens = [t.to_json() for t in self._live_tokens("api", request.args.get("deploymentId"))
                  if self._deployments[t.deployment_id].organization_id == organizationId]
        return 200, _page("tokens", tokens, request)

    def _CreateApiToken(self, request: Request, organizationId: str) -> tuple[int, dict[str, Any]]:
        self._organization(organizationId)
        body = request.get_json()
        if body["scope"] != "DEPLOYMENT":
            # The document allows WORKSPACE and ORGANIZATION too; only Deployment tokens are emulated.
            raise _field_error("scope", f"only DEPLOYMENT is emulated, got {body['scope']!r}")
        if "entityId" not in body:
            raise _field_error("entityId", "required when scope is DEPLOYMENT", code="required")
        if body["role"] not in _DEPLOYMENT_ROLES:
            raise _field_error("role", f"must be one of {sorted(_DEPLOYMENT_ROLES)} for scope DEPLOYMENT, "
                                       f"got {body['role']!r}")
        deployment = self._deployment(organizationId, body["entityId"])
        token = self._issue_token("api", deployment.id, body, role=body["role"])
        return 200, token.to_json(with_value=True)

    def _GetApiToken(self, request: Request, organizationId: str, tokenId: str) -> tuple[int, dict[str, Any]]:
        return 200, self._api_token(organizationId, tokenId).to_json()

    def _DeleteApiToken(self, request: Request, organizationId: str, tokenId: str) -> tuple[int, dict[str, Any]]:
        self._revoke(self._api_token(organizationId, tokenId))
        return 204, {}

    def _RotateApiToken(self, request: Request, organizationId: str, tokenId: str) -> tuple[int, dict[str, Any]]:
        token = self._api_token(organizationId, tokenId)
        self._revoked.append(dataclasses.replace(token))
        token.value = _new_token_value()
        return 200, token.to_json(with_value=True)

    # -- helpers ---------------------------------------------------------------------------

    def _organization(self, org: str) -> None:
        if org != self.organization_id and all(d.organization_id != org for d in self._seed):
            raise ApiError(404, f"Organization {org} not found")

    def _deployment(self, org: str, dep: str) -> Deployment:
        self._organization(org)
        if dep not in self._deployments or self._deployments[dep].organization_id != org:
            raise ApiError(404, f"Deployment {dep} not found")
        return self._deployments[dep]

    def _token(self, kind: str, token_id: str, deployment_id: str | None = None) -> Token:
        token = self._tokens.get(token_id)
        if token is None or token.kind != kind or deployment_id not in (None, token.deployment_id):
            raise ApiError(404, f"Token {token_id} not found")
        return token

    def _api_token(self, org: str, token_id: str) -> Token:
        self._organization(org)
        token = self._token("api", token_id)
        if self._deployments[token.deployment_id].organization_id != org:
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
        # name and tokenExpiryPeriodInDays (1..3650) were checked against the document already
        created = _now()
        expiry_days = body.get("tokenExpiryPeriodInDays")
        token = Token(
            id=_new_id(),
            kind=kind,
            name=body["name"],
            description=str(body.get("description") or ""),
            deployment_id=deployment_id,
            value=_new_token_value(),
            role=role,
            created_at=created,
            expires_at=created + timedelta(days=expiry_days) if expiry_days else None,
            expiry_days=expiry_days,
        )
        self._tokens[token.id] = token
        return token

    def _revoke(self, token: Token) -> None:
        self._revoked.append(self._tokens.pop(token.id))

    def _token_state(self, token: Token) -> dict[str, Any]:
        return {**token.to_json(with_value=True), "deploymentId": token.deployment_id}

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
    """Offset/limit pagination as in the v1 list endpoints (the document bounds and types both).

    Lenient: ``sorts`` is accepted (the document allows it) but not applied; items come in creation order.
    """
    offset = int(request.args.get("offset", 0))
    limit = int(request.args.get("limit", 20))
    return {key: items[offset : offset + limit], "offset": offset, "limit": limit, "totalCount": len(items)}
