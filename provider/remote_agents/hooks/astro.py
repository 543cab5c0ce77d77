"""The Astro Platform API v1: agent tokens, Deployment API tokens, Deployments.

The contract is Astronomer's published OpenAPI document (https://api.astronomer.io/v1; a pinned copy
and its source are in the repository's ``sandbox/contracts/``): each method names the document's
operation and the permission (``x-permission``) that operation needs, so a refusal says which one.

Connection (type ``astro``): host = API base URL (default ``https://api.astronomer.io/v1``),
password = an Astro API token, extra ``organization_id``. Transient answers (429, 5xx, transport
errors) are retried with exponential backoff that honours ``Retry-After``, with a warning per retry.
Every other error becomes an ``AstroApiError`` carrying the status, the API's message and its
``fieldErrors``, never the token. Token values the API returns (only on create) are masked before
anything else sees them.
"""

from __future__ import annotations

import logging
from functools import cached_property
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import tenacity
from airflow.sdk import BaseHook, Connection
from airflow.sdk.log import mask_secret

from remote_agents.errors import AstroApiError, AstroUncertainCreateError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.astronomer.io/v1"
API_TOKENS_PERMISSION = "organization.apiTokens.access"  # every /organizations/{id}/tokens operation
TRANSIENT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
PAGE_SIZE = 1000  # the largest `limit` the list endpoints accept


class _TransientAnswer(Exception):
    """A 429/5xx answer worth retrying; ``retry_after`` in seconds when the API said so."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_after = _retry_after_seconds(response)
        super().__init__(f"{response.status_code}")


class _RateLimited(_TransientAnswer):
    """A 429: the API refused the call before doing anything, so even a create may be sent again."""


# A create is sent again only when it certainly never took effect: refused for the rate, or never sent.
_CREATE_RETRIED = (_RateLimited, httpx.ConnectError, httpx.ConnectTimeout)
_RETRIED = (_TransientAnswer, httpx.TransportError)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for this API, so fall back to the exponential wait


# Who holds a permission, by its first segment (Astronomer's docs on API tokens and user permissions).
_WHO_HOLDS = {
    "organization": ("an Organization API token with the Organization Owner role holds it; a Deployment or "
                     "Workspace API token never does"),
    "deployment": ("an Organization API token with the Organization Owner role, or one granted Deployment Admin "
                   "on this Deployment, holds it"),
}


def _error_message(response: httpx.Response) -> tuple[str, str]:
    """The API's ``Error.message`` and its ``fieldErrors`` as ``" (field: message; ...)"``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return response.reason_phrase or "no message", ""
    fields = [f"{e.get('field')}: {e.get('message')}" for e in body.get("fieldErrors") or [] if isinstance(e, dict)]
    return str(body.get("message") or response.reason_phrase or "no message"), f" ({'; '.join(fields)})" if fields else ""


class AstroHook(BaseHook):
    """Talks to the Astro Platform API v1 with the API token of an ``astro`` Connection.

    :param astro_conn_id: the Connection (host = API base URL, password = API token, extra.organization_id)
    :param organization_id: overrides the Connection's ``extra.organization_id``
    :param max_attempts: tries per request for transient errors (429, 5xx, connection problems)
    :param backoff: first wait in seconds between tries, doubled each time (capped at ``max_backoff``)
    """

    conn_name_attr = "astro_conn_id"
    default_conn_name = "astro_default"
    conn_type = "astro"
    hook_name = "Astro Platform API"

    def __init__(
        self,
        astro_conn_id: str = default_conn_name,
        organization_id: str | None = None,
        *,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.astro_conn_id = astro_conn_id
        self._organization_id = organization_id
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL", "password": "API token"},
            "placeholders": {"host": DEFAULT_API_URL, "extra": '{"organization_id": "<your organization id>"}'},
        }

    @cached_property
    def connection(self) -> Connection:
        conn = self.get_connection(self.astro_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return conn

    @cached_property
    def base_url(self) -> str:
        host = (self.connection.host or DEFAULT_API_URL).rstrip("/")
        return host if "://" in host else f"https://{host}"

    @cached_property
    def organization_id(self) -> str:
        organization = self._organization_id or self.connection.extra_dejson.get("organization_id")
        if not organization:
            raise ConfigError(
                [f"organization_id: connection {self.astro_conn_id!r} has no extra.organization_id; "
                 "add it to the connection's extra, or pass organization_id to the operator"],
                source=f"connection {self.astro_conn_id}",
            )
        return str(organization)

    def get_conn(self) -> httpx.Client:
        return self._client

    @cached_property
    def _client(self) -> httpx.Client:
        if not self.connection.password:
            raise ConfigError(
                [f"password: connection {self.astro_conn_id!r} has no API token; "
                 "create an Organization API token (Organization Owner) in Astro and put it in the password field"],
                source=f"connection {self.astro_conn_id}",
            )
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.connection.password}", "Accept": "application/json"},
            timeout=self.timeout,
        )

    def close(self) -> None:
        if "_client" in self.__dict__:
            self._client.close()
            del self.__dict__["_client"]

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.request("GET", f"{self._org_path}/deployments", params={"limit": 1},
                         permission="organization.deployments.get")
        except (AstroApiError, ConfigError) as error:
            return False, str(error)
        return True, f"Connected to {self.base_url} as organization {self.organization_id}"

    # -- requests ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, permission: str, json: Any = None,
                params: dict[str, Any] | None = None, creates: bool = False) -> Any:
        """One API call, retried while the answer is transient; the decoded JSON body (None for 204).

        :param permission: the operation's ``x-permission`` in the API document, named when refused
        :param creates: the call makes a new object (a token): a 5xx or a timeout may come after it was
            made, so it is not retried but raised as ``AstroUncertainCreateError``
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_CREATE_RETRIED if creates else _RETRIED),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            before_sleep=self._warn_retry(method, path),
            reraise=True,
        )
        try:
            response = retrying(self._send, method, path, json, params)
        except _TransientAnswer as transient:
            if creates and not isinstance(transient, _RateLimited):
                raise self._uncertain(method, path, f"answered {transient.response.status_code}") from None
            raise self._error(method, path, transient.response, permission, attempts=self.max_attempts) from None
        except httpx.TimeoutException as error:
            if creates and not isinstance(error, httpx.ConnectTimeout):
                raise self._uncertain(method, path, f"did not answer within {self.timeout:.0f} s") from None
            raise AstroApiError(
                f"Astro API {method} {path}: {self.base_url} did not answer within {self.timeout:.0f} s "
                f"({type(error).__name__}); Astro is slow or the network path drops answers: re-run later"
            ) from None
        except httpx.TransportError as error:
            raise AstroApiError(
                f"Astro API {method} {path} failed after {self.max_attempts} tries: cannot reach "
                f"{self.base_url} ({type(error).__name__}: {error}); check the host of connection "
                f"{self.astro_conn_id!r} and the network path to it"
            ) from None
        if response.status_code >= 400:
            raise self._error(method, path, response, permission)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, json: Any, params: dict[str, Any] | None) -> httpx.Response:
        response = self.get_conn().request(method, path, json=json, params=params)
        if response.status_code == 429:
            raise _RateLimited(response)
        if response.status_code in TRANSIENT_STATUS_CODES:
            raise _TransientAnswer(response)
        return response

    @staticmethod
    def _uncertain(method: str, path: str, what: str) -> AstroUncertainCreateError:
        return AstroUncertainCreateError(
            f"Astro API {method} {path} {what}: the object may or may not have been made; look it up by name "
            "before creating it again"
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _TransientAnswer) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff)
        return min(self.backoff * 2 ** (state.attempt_number - 1), self.max_backoff)

    def _warn_retry(self, method: str, path: str) -> Any:
        def warn(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            what = f"answered {error}" if isinstance(error, _TransientAnswer) else f"failed ({type(error).__name__})"
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("Astro API %s %s %s; retry %d of %d in %.1f s",
                        method, path, what, state.attempt_number, self.max_attempts - 1, wait)

        return warn

    def _error(self, method: str, path: str, response: httpx.Response, permission: str,
               attempts: int = 1) -> AstroApiError:
        message, field_errors = _error_message(response)
        status = response.status_code
        tries = f" after {attempts} tries" if attempts > 1 else ""
        prefix = f"Astro API {method} {path} answered {status}{tries}: {message}{field_errors}"
        if status == 401:
            hint = (f"the API token in connection {self.astro_conn_id!r} is missing, expired or revoked; "
                    "put a valid Organization API token in its password field")
        elif status == 403:
            hint = (f"the API token in connection {self.astro_conn_id!r} lacks the permission {permission}, "
                    f"which this call needs; {_WHO_HOLDS.get(permission.split('.')[0], '')}")
        elif status == 400 and "maximum" in message.lower():
            hint = ("the Deployment has as many agent tokens as Astro allows; revoke unused ones "
                    "(Astro UI > Deployment > Remote Agents > Tokens, or RevokeAgentTokenOperator) and re-run")
        elif status == 400:
            hint = "the API refused the request's fields; this is a bug of this provider against the API, report it"
        elif status == 404:
            hint = (f"check organization_id ({self.organization_id}) and the deployment or token id; "
                    f"the token of connection {self.astro_conn_id!r} must see them")
        elif status in TRANSIENT_STATUS_CODES:
            hint = "Astro is unavailable or throttling; re-run the task later"
        else:
            hint = "see the API's message"
        return AstroApiError(f"{prefix}; {hint}", status_code=status)

    @property
    def _org_path(self) -> str:
        return f"/organizations/{self.organization_id}"

    def _list(self, path: str, key: str, permission: str, **filters: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", path, permission=permission,
                                params={**filters, "offset": len(items), "limit": PAGE_SIZE})
            items.extend(page.get(key) or [])
            if not page.get(key) or len(items) >= int(page.get("totalCount", len(items))):
                return items

    def _get_or_none(self, path: str, permission: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path, permission=permission)
        except AstroApiError as error:
            if error.status_code == 404:
                return None
            raise

    def _delete(self, path: str, permission: str) -> bool:
        try:
            self.request("DELETE", path, permission=permission)
        except AstroApiError as error:
            if error.status_code == 404:
                return False
            raise
        return True

    @staticmethod
    def _masked(created: dict[str, Any]) -> dict[str, Any]:
        # The only moment a token value exists outside Kubernetes: mask it before anyone can log it.
        if created.get("token"):
            mask_secret(created["token"])
        return created

    # -- Deployments (GetDeployment, UpdateDeployment) -----------------------------------------------

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.request("GET", f"{self._org_path}/deployments/{deployment_id}", permission="deployment.get")

    def get_remote_api_url(self, deployment_id: str) -> str:
        """The Deployment's agent API URL (the chart's ``astroDeploymentAPIURL``) as Astro reports it."""
        return remote_api_url(self.get_deployment(deployment_id))

    def update_remote_execution(self, deployment_id: str, *, allowed_ip_address_ranges: Sequence[str] | None = None,
                                task_log_bucket: str | None = None, task_log_url_pattern: str | None = None,
                                clear_task_logs: bool = False, workload_identity: str | None = None,
                                current: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Change the given Remote Execution settings (None keeps one) and keep everything else as it is.

        The API takes only a complete update body, so the Deployment is read first and the body rebuilt
        from it (``update_request``), the way the Astro CLI does. ``clear_task_logs`` leaves the task log
        bucket and URL pattern out of that body. ``current`` is the Deployment as just read, to save a GET.
        Returns the updated Deployment.
        """
        current = current or self.get_deployment(deployment_id)
        changes = {"allowedIpAddressRanges": list(allowed_ip_address_ranges)
                   if allowed_ip_address_ranges is not None else None,
                   "taskLogBucket": task_log_bucket, "taskLogUrlPattern": task_log_url_pattern}
        body = update_request(current, remote_execution={k: v for k, v in changes.items() if v is not None},
                              cleared=("taskLogBucket", "taskLogUrlPattern") if clear_task_logs else (),
                              workload_identity=workload_identity)
        return self.request("POST", f"{self._org_path}/deployments/{deployment_id}", json=body,
                            permission="deployment.update")

    # -- agent tokens (ListAgentTokens, GetAgentToken, CreateAgentToken, DeleteAgentToken) ---------

    def _agent_tokens_path(self, deployment_id: str) -> str:
        return f"{self._org_path}/deployments/{deployment_id}/agent-tokens"

    def list_agent_tokens(self, deployment_id: str) -> list[dict[str, Any]]:
        return self._list(self._agent_tokens_path(deployment_id), "tokens", "deployment.agentTokens.get")

    def get_agent_token(self, deployment_id: str, token_id: str) -> dict[str, Any] | None:
        """The token's metadata (never its value), or None if it does not exist (revoked)."""
        return self._get_or_none(f"{self._agent_tokens_path(deployment_id)}/{token_id}", "deployment.agentTokens.get")

    def create_agent_token(self, deployment_id: str, *, name: str, description: str = "",
                           expiry_days: int | None = None) -> dict[str, Any]:
        """A new agent token; the value (key ``token``) is in this answer only, already masked."""
        body: dict[str, Any] = {"name": name, "description": description}
        if expiry_days:
            body["tokenExpiryPeriodInDays"] = expiry_days
        created = self.request("POST", self._agent_tokens_path(deployment_id), json=body,
                               permission="deployment.agentTokens.create", creates=True)
        return self._masked(created)

    def delete_agent_token(self, deployment_id: str, token_id: str) -> bool:
        """Revoke; False if it was already gone."""
        return self._delete(f"{self._agent_tokens_path(deployment_id)}/{token_id}", "deployment.agentTokens.delete")

    # -- Deployment API tokens (ListApiTokens, GetApiToken, CreateApiToken, DeleteApiToken) -------------

    def list_deployment_tokens(self, deployment_id: str) -> list[dict[str, Any]]:
        """The API tokens that hold a role on the Deployment (metadata only)."""
        return self._list(f"{self._org_path}/tokens", "tokens", API_TOKENS_PERMISSION, deploymentId=deployment_id)

    def get_api_token(self, token_id: str) -> dict[str, Any] | None:
        return self._get_or_none(f"{self._org_path}/tokens/{token_id}", API_TOKENS_PERMISSION)

    def create_deployment_token(self, deployment_id: str, *, name: str, description: str = "",
                                role: str = "DEPLOYMENT_ADMIN", expiry_days: int | None = None) -> dict[str, Any]:
        """A new Deployment API token; the value (key ``token``) is in this answer only, already masked.

        :param role: ``DEPLOYMENT_ADMIN`` (the only built-in Deployment role) or a custom Deployment role
        """
        body: dict[str, Any] = {"name": name, "description": description, "scope": "DEPLOYMENT",
                                "entityId": deployment_id, "role": role}
        if expiry_days:
            body["tokenExpiryPeriodInDays"] = expiry_days
        return self._masked(self.request("POST", f"{self._org_path}/tokens", json=body,
                                         permission=API_TOKENS_PERMISSION, creates=True))

    def delete_api_token(self, token_id: str) -> bool:
        return self._delete(f"{self._org_path}/tokens/{token_id}", API_TOKENS_PERMISSION)


def remote_api_url(deployment: Mapping[str, Any]) -> str:
    """The chart's ``astroDeploymentAPIURL`` as Astro reports it (``remoteExecution.remoteApiUrl``)."""
    settings = deployment.get("remoteExecution") or {}
    if not settings.get("enabled") or not settings.get("remoteApiUrl"):
        raise ConfigError([f"astro.deployment_id: Deployment {deployment.get('id')} does not have Remote Execution "
                           "enabled, so Astro reports no agent API URL; use the id of a Remote Execution Deployment"],
                          source="Astro API")
    return str(settings["remoteApiUrl"])


# The Deployment fields an update keeps as they are; the document requires most of them in every update.
_KEPT_FIELDS = (
    "name", "description", "workspaceId", "executor", "isCicdEnforced", "isDagDeployEnabled", "isHighAvailability",
    "isDevelopmentMode", "schedulerSize", "contactEmails", "defaultTaskPodCpu", "defaultTaskPodMemory",
    "resourceQuotaCpu", "resourceQuotaMemory",
)


def update_request(current: Mapping[str, Any], *, remote_execution: Mapping[str, Any] | None = None,
                   cleared: Sequence[str] = (), workload_identity: str | None = None) -> dict[str, Any]:
    """A complete ``UpdateDeploymentRequest`` that keeps every setting of ``current`` but the changes given.

    ``cleared`` names ``remoteExecution`` keys to leave out, so that the update unsets them.

    Secret environment variables are sent with their key and no value: GET never returns a secret
    value, and the API keeps the stored one (the Astro CLI's ``deployment update`` relies on this too).
    The workload identity is sent only when it changes, as the CLI does.
    """
    kind = current.get("type")
    if kind not in ("DEDICATED", "STANDARD"):
        raise ConfigError([f"deployment_id: Deployment {current.get('id')} is {kind}; Remote Execution needs a "
                           "Dedicated Deployment"], source="Astro API")
    body: dict[str, Any] = {"type": kind, **{key: current[key] for key in _KEPT_FIELDS if key in current}}
    body["environmentVariables"] = [
        {"key": v["key"], "isSecret": v["isSecret"], **({"value": v["value"]} if "value" in v else {})}
        for v in current.get("environmentVariables") or []
    ]
    settings = current.get("remoteExecution") or {}
    if settings.get("enabled"):
        body["remoteExecution"] = {
            "enabled": True,
            **{key: settings[key] for key in ("allowedIpAddressRanges", "taskLogBucket", "taskLogUrlPattern")
               if key in settings},
            **(remote_execution or {}),
        }
        for key in cleared:
            body["remoteExecution"].pop(key, None)
    elif remote_execution:
        raise ConfigError([f"deployment_id: Deployment {current.get('id')} does not have Remote Execution enabled; "
                           "create a Remote Execution Deployment and use its id"], source="Astro API")
    if workload_identity is not None:
        body["workloadIdentity"] = workload_identity
    return body
