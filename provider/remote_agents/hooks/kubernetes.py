"""Kubernetes objects as plain dicts, read and written through the cncf ``KubernetesHook``.

Operators converge by comparing dicts, so this wrapper hands out the API's JSON as-is instead of
the client's typed models. It is also the one place that maps the API's errors: "not found" is a
state (``None`` / ``False``), transient codes are retried, and everything else becomes a
``ClusterError`` naming the object, the status, the server's message and the likely fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import tenacity

from remote_agents.errors import ClusterError
from remote_agents.hooks.cluster import ClusterAccess, kubernetes_hook

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

# The kubernetes client is imported where it is used: importing it costs about 0.25 s, which every
# Dag file importing an operator would otherwise pay at each parse.

log = logging.getLogger(__name__)

FIELD_MANAGER = "remote-agents"
TRANSIENT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
API_ATTEMPTS = 4
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class _KindApi:
    group: str  # "core", "apps" or "rbac": which typed client has the methods
    method_suffix: str  # e.g. "namespaced_secret": read_namespaced_secret, create_namespaced_secret, …
    namespaced: bool


KINDS: dict[str, _KindApi] = {
    "Namespace": _KindApi("core", "namespace", False),
    "Secret": _KindApi("core", "namespaced_secret", True),
    "ConfigMap": _KindApi("core", "namespaced_config_map", True),
    "ServiceAccount": _KindApi("core", "namespaced_service_account", True),
    "Deployment": _KindApi("apps", "namespaced_deployment", True),
    "Role": _KindApi("rbac", "namespaced_role", True),
    "RoleBinding": _KindApi("rbac", "namespaced_role_binding", True),
}


class KubernetesApiError(ClusterError):
    """The Kubernetes API answered a request with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def object_ref(kind: str, name: str, namespace: str | None = None) -> str:
    """How messages and ``Change.resource`` name an object: ``k8s:Secret/ns/name``."""
    return f"k8s:{kind}/{namespace}/{name}" if namespace else f"k8s:{kind}/{name}"


def _is_transient(error: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(error, ApiException) and error.status in TRANSIENT_STATUS_CODES


class ClusterObjects:
    """Read, create, replace, patch and delete objects of a few kinds on one cluster.

    Writes carry ``fieldManager=remote-agents`` so ``kubectl get -o yaml`` shows who wrote a field.
    ``dry_run=True`` sends ``dryRun=All``: the server validates the write but stores nothing.
    """

    def __init__(self, access: ClusterAccess) -> None:
        self.access = access

    @cached_property
    def _clients(self) -> dict[str, Any]:
        from kubernetes.client import AppsV1Api, CoreV1Api, RbacAuthorizationV1Api

        hook = kubernetes_hook(self.access)
        return {"core": CoreV1Api(hook.api_client), "apps": AppsV1Api(hook.api_client),
                "rbac": RbacAuthorizationV1Api(hook.api_client)}

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("read", kind, name, namespace)
        except KubernetesApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        return self._call("list", kind, "", namespace, label_selector=label_selector)["items"]

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kind, name, namespace = _identity(obj)
        return self._call("create", kind, name, namespace, body=obj, **_write_options(dry_run))

    def replace(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Replace in one write; ``metadata.resourceVersion`` makes a concurrent change fail (409), not vanish."""
        kind, name, namespace = _identity(obj)
        return self._call("replace", kind, name, namespace, body=obj, **_write_options(dry_run))

    def patch(self, kind: str, name: str, namespace: str | None, patch: dict[str, Any],
              dry_run: bool = False) -> dict[str, Any]:
        """A strategic-merge patch: only the fields in ``patch`` change."""
        return self._call("patch", kind, name, namespace, body=patch, _content_type=STRATEGIC_MERGE,
                          **_write_options(dry_run))

    def delete(self, kind: str, name: str, namespace: str | None = None, dry_run: bool = False) -> bool:
        """True if deleted, False if it was already gone."""
        options = {"dry_run": "All"} if dry_run else {}
        try:
            self._call("delete", kind, name, namespace, **options)
        except KubernetesApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def _call(self, verb: str, kind: str, name: str, namespace: str | None, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api = KINDS[kind]
        method: Callable[..., Any] = getattr(self._clients[api.group], f"{verb}_{api.method_suffix}")
        args: list[Any] = [name] if name and verb not in ("create", "list") else []
        if api.namespaced:
            args.append(namespace)
        if verb in ("create", "replace", "patch"):
            args.append(kwargs.pop("body"))
        try:
            response = self._retrying(method, *args, _preload_content=False, **kwargs)
        except ApiException as error:
            raise _api_error(verb, kind, name, namespace, error, self.access) from None
        except HTTPError as error:
            raise ClusterError(
                f"cannot reach {self.access.describe()} to {verb} {object_ref(kind, name, namespace)}: {error}; "
                "check the cluster endpoint and that the connection's network path is open"
            ) from None
        return json.loads(response.data or b"{}")

    @staticmethod
    @tenacity.retry(
        retry=tenacity.retry_if_exception(_is_transient),
        stop=tenacity.stop_after_attempt(API_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.25, max=4),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    def _retrying(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)


def _identity(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    meta = obj["metadata"]
    return obj["kind"], meta["name"], meta.get("namespace")


def _write_options(dry_run: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"field_manager": FIELD_MANAGER}
    if dry_run:
        options["dry_run"] = "All"
    return options


_HINTS = {
    401: ("the cluster refused the credentials; check the Kubernetes connection, or for EKS the AWS "
          "connection and the cluster's access entries"),
    403: "the identity lacks RBAC permission for this; grant it with a Role/ClusterRole binding",
    404: "it, or its namespace, does not exist; run EnsureNamespaceOperator first",
    409: "it already exists or changed while we wrote it; re-run the task",
    422: "the server rejected the object as invalid",
}


def _api_error(verb: str, kind: str, name: str, namespace: str | None, error: ApiException,
               access: ClusterAccess) -> ClusterError:
    # Only the server's Status message is used: str(ApiException) would add headers and the raw body.
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except (TypeError, ValueError):
        message = error.reason
    hint = _HINTS.get(error.status or 0, "see the message above")
    return KubernetesApiError(
        f"{verb} {object_ref(kind, name, namespace)} on {access.describe()} failed: "
        f"{error.status} {message}; {hint}",
        status=error.status,
    )
