"""Kubernetes objects created beside the chart: the namespace, the Secrets the values name, and the
pip constraints ConfigMap (reference 3.6, 4.2, 4.5).

Pure: Secret values here are the placeholder ``SECRET_PLACEHOLDER``. Operators fill them at run time
from Connections / the Astro API, in memory only (docs/design.md, principle 5).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render.values import STATIC_CREDENTIAL_KEYS
from remote_agents.spec import EnvironmentSpec, StaticCredentialsIdentitySpec

SECRET_PLACEHOLDER = "<set-at-run-time>"
REGISTRY_USER = "cli"  # Astro's registry takes any Deployment API token with the user `cli` (reference 2).
AGENT_TOKEN_KEY = "token"  # the chart reads `agentTokenSecretName` under this key (reference 3.1)
OPENLINEAGE_KEY = "api-key"
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"


def build_manifests(spec: EnvironmentSpec, constraints: str | None = None) -> list[dict[str, Any]]:
    """Every object to apply before the chart, namespace first.

    ``constraints`` is the pip freeze of the agent image (``include/agent-constraints.txt``); it is
    needed only when a worker pip-installs packages.
    """
    manifests = [build_namespace(spec), build_agent_token_secret(spec), build_registry_secret(spec)]
    if any(worker.pip_packages for worker in spec.workers):
        manifests.append(build_constraints_configmap(spec, constraints))
    if isinstance(spec.identity, StaticCredentialsIdentitySpec):
        manifests.append(build_aws_credentials_secret(spec))
    if spec.chart.open_lineage:
        manifests.append(build_openlineage_secret(spec))
    return manifests


def build_namespace(spec: EnvironmentSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace, "labels": _labels(spec)}}


def build_agent_token_secret(spec: EnvironmentSpec) -> dict[str, Any]:
    """The Secret `agentTokenSecretName` names; the agent token goes under key `token`."""
    return _secret(spec, spec.astro.agent_token_secret_name, "Opaque", {AGENT_TOKEN_KEY: SECRET_PLACEHOLDER})


def build_registry_secret(spec: EnvironmentSpec) -> dict[str, Any]:
    """The image pull Secret `imagePullSecretName` names (what `kubectl create secret docker-registry` makes)."""
    payload = build_dockerconfigjson(spec.astro.registry, REGISTRY_USER, SECRET_PLACEHOLDER)
    return _secret(
        spec, spec.astro.registry_secret_name, "kubernetes.io/dockerconfigjson", {DOCKERCONFIGJSON_KEY: payload}
    )


def build_dockerconfigjson(registry: str, username: str, token: str) -> str:
    """The `.dockerconfigjson` payload; operators call it with the real token, which stays in memory."""
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return json.dumps({"auths": {registry: {"username": username, "password": token, "auth": auth}}})


def build_constraints_configmap(spec: EnvironmentSpec, constraints: str | None) -> dict[str, Any]:
    """The ConfigMap the workers' pip-install initContainer mounts at /constraints."""
    if not constraints or not constraints.strip():
        raise ConfigError(
            ["workers[].pip_packages needs the agent image's constraints (include/agent-constraints.txt); "
             "pass its text, regenerated for astro.agent_image"],
            spec.name,
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": naming.constraints_configmap_name(spec), "namespace": spec.namespace, "labels": _labels(spec)},
        "data": {naming.CONSTRAINTS_CONFIG_KEY: constraints},
    }


def build_aws_credentials_secret(spec: EnvironmentSpec) -> dict[str, Any]:
    """On-prem: the AWS keys the agents' `secretKeyRef` env reads (values.build_credentials_env)."""
    identity = spec.identity
    if not isinstance(identity, StaticCredentialsIdentitySpec):
        raise ConfigError(["identity.mode: an AWS credentials Secret is only for 'static-credentials'"], spec.name)
    return _secret(spec, identity.secret_name, "Opaque", dict.fromkeys(STATIC_CREDENTIAL_KEYS, SECRET_PLACEHOLDER))


def build_openlineage_secret(spec: EnvironmentSpec) -> dict[str, Any]:
    """The Secret `openLineage.apiKeySecret` names; it holds a Deployment API token under `api-key`."""
    return _secret(spec, naming.openlineage_secret_name(spec), "Opaque", {OPENLINEAGE_KEY: SECRET_PLACEHOLDER})


def _secret(spec: EnvironmentSpec, name: str, secret_type: str, string_data: dict[str, str]) -> dict[str, Any]:
    # stringData keeps the rendered plan readable; the API server stores it base64-encoded in `data`.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": _labels(spec)},
        "type": secret_type,
        "stringData": string_data,
    }


def _labels(spec: EnvironmentSpec) -> dict[str, str]:
    # Ownership last: teardown selects on it, so a spec label must not be able to change it.
    return {**spec.labels, **naming.ownership_labels(spec)}
