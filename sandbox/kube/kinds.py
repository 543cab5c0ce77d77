"""The resource table and the static documents derived from it: /version, discovery and OpenAPI v3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    has_status: bool = False  # a status subresource: the main resource never writes status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_plural(self) -> str:
        """The name used in error messages, e.g. `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


# Adding a kind is one line here; discovery, OpenAPI, routing and validation follow from it.
KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",), True),
    Kind("", "v1", "Secret", "secrets"),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Kind("", "v1", "Service", "services", True, ("svc",), True),
    Kind("", "v1", "Pod", "pods", True, ("po",), True),
    Kind("", "v1", "Event", "events", True, ("ev",)),
    Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), True),
    Kind("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), True),
    Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), True),
    Kind("batch", "v1", "Job", "jobs", True, (), True),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",), True),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), True),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), True),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
)


def find_kind(kind_or_plural: str, api_version: str | None = None) -> Kind:
    """Look a kind up by kind name, plural or short name (case-insensitive), e.g. for the Python/admin API."""
    wanted = kind_or_plural.lower()
    for kind in KINDS:
        names = {kind.kind.lower(), kind.plural, *kind.short_names}
        if wanted in names and api_version in (None, kind.api_version):
            return kind
    raise KeyError(f"unknown kind {kind_or_plural!r} (apiVersion {api_version})")


def kind_for_path(group: str, version: str, plural: str) -> Kind | None:
    for kind in KINDS:
        if (kind.group, kind.version, kind.plural) == (group, version, plural):
            return kind
    return None


def group_versions() -> list[tuple[str, str]]:
    """Distinct (group, version) pairs, core group first, in table order."""
    seen: list[tuple[str, str]] = []
    for kind in KINDS:
        if (kind.group, kind.version) not in seen:
            seen.append((kind.group, kind.version))
    return seen


def version_info(kubernetes_version: str) -> dict[str, str]:
    major, minor, *rest = kubernetes_version.split(".")
    patch = rest[0] if rest else "0"
    # The Python client rejects a VersionInfo missing any of these fields.
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
        "gitVersion": f"v{major}.{minor}.{patch}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def core_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def group_list() -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for group, version in group_versions():
        if group:
            groups.setdefault(group, []).append(version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
            }
            for group, versions in groups.items()
        ],
    }


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for kind in kinds:
        resources.append(
            {
                "name": kind.plural,
                "singularName": kind.kind.lower(),
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": list(ALL_VERBS),
                **({"shortNames": list(kind.short_names)} if kind.short_names else {}),
            }
        )
        if kind.has_status:
            resources.append(
                {"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced,
                 "kind": kind.kind, "verbs": ["get", "patch", "update"]}
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def openapi_root() -> dict[str, Any]:
    paths = {}
    for group, version in group_versions():
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash=sandbox"}
    return {"paths": paths}


def openapi_group_version(group: str, version: str) -> dict[str, Any] | None:
    """A spec with only PATCH operations that accept `fieldValidation`.

    That is all client-go's query-param verifier looks at: it then leaves field validation to the
    server (which we do with kubernetes-validate) instead of needing full schemas client-side.
    """
    kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths = {}
    for kind in kinds:
        scope = "/namespaces/{namespace}" if kind.namespaced else ""
        paths[f"{prefix}{scope}/{kind.plural}/{{name}}"] = {
            "patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind.kind},
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "sandbox"}, "paths": paths}
