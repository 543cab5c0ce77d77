"""Kubernetes objects created beside the chart (render/manifests.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render.manifests import (
    SECRET_PLACEHOLDER,
    build_dockerconfigjson,
    build_manifests,
    build_registry_secret,
)
from remote_agents.spec import EnvironmentSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
CONSTRAINTS = (ROOT / "include" / "agent-constraints.txt").read_text()
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]


def spec_named(name: str) -> EnvironmentSpec:
    return load_spec(ROOT / "include" / "environments" / f"{name}.yaml")


def kinds_and_names(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifests]


@pytest.fixture(params=SPEC_FILES, ids=lambda p: p.stem)
def spec(request: pytest.FixtureRequest) -> EnvironmentSpec:
    return load_spec(request.param)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_strict_kubernetes_validation(spec: EnvironmentSpec, version: str) -> None:
    for manifest in build_manifests(spec, CONSTRAINTS):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_every_object_carries_the_ownership_labels(spec: EnvironmentSpec) -> None:
    for manifest in build_manifests(spec, CONSTRAINTS):
        assert naming.ownership_labels(spec).items() <= manifest["metadata"]["labels"].items()


def test_namespace_comes_first_and_everything_else_lives_in_it(spec: EnvironmentSpec) -> None:
    first, *rest = build_manifests(spec, CONSTRAINTS)
    assert (first["kind"], first["metadata"]["name"]) == ("Namespace", spec.namespace)
    assert {m["metadata"]["namespace"] for m in rest} == {spec.namespace}


def test_secret_values_are_placeholders(spec: EnvironmentSpec) -> None:
    for manifest in build_manifests(spec, CONSTRAINTS):
        if manifest["kind"] == "Secret":
            for key, value in manifest["stringData"].items():
                assert value == SECRET_PLACEHOLDER or key == ".dockerconfigjson"


def test_agent_token_secret_is_opaque_with_key_token() -> None:
    spec = spec_named("tutorial")
    secret = next(m for m in build_manifests(spec, CONSTRAINTS) if m["metadata"]["name"] == spec.astro.agent_token_secret_name)
    assert (secret["type"], list(secret["stringData"])) == ("Opaque", ["token"])


def test_registry_secret_is_a_dockerconfigjson_for_the_astro_registry() -> None:
    secret = build_registry_secret(spec_named("tutorial"))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert list(secret["stringData"]) == [".dockerconfigjson"]
    auths = json.loads(secret["stringData"][".dockerconfigjson"])["auths"]
    assert list(auths) == ["images.astronomer.cloud"]
    assert auths["images.astronomer.cloud"]["username"] == "cli"


def test_dockerconfigjson_auth_is_base64_of_user_and_token() -> None:
    entry = json.loads(build_dockerconfigjson("images.astronomer.cloud", "cli", "tok3n"))["auths"]["images.astronomer.cloud"]
    assert entry == {"username": "cli", "password": "tok3n", "auth": base64.b64encode(b"cli:tok3n").decode()}


def test_constraints_configmap_holds_the_constraints_text() -> None:
    spec = spec_named("tutorial")
    configmap = next(m for m in build_manifests(spec, CONSTRAINTS) if m["kind"] == "ConfigMap")
    assert configmap["metadata"]["name"] == naming.constraints_configmap_name(spec)
    assert configmap["data"] == {"constraints.txt": CONSTRAINTS}


def test_constraints_configmap_is_left_out_when_no_worker_pip_installs() -> None:
    assert "ConfigMap" not in [m["kind"] for m in build_manifests(spec_named("onprem"), CONSTRAINTS)]


def test_pip_packages_without_constraints_are_refused() -> None:
    with pytest.raises(ConfigError, match="agent-constraints.txt"):
        build_manifests(spec_named("tutorial"), None)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("tutorial", [("Namespace", "my-namespace"), ("Secret", "astro-agent-token"), ("Secret", "astro-registry"), ("ConfigMap", "astro-agent-pip-constraints")]),
        ("onprem", [("Namespace", "astro-agents"), ("Secret", "astro-agent-token"), ("Secret", "astro-registry"), ("Secret", "astro-agent-aws-credentials")]),
        ("multi-queue", [("Namespace", "agents-multi"), ("Secret", "astro-agent-token"), ("Secret", "astro-registry"), ("ConfigMap", "agents-pip-constraints"), ("Secret", "agents-openlineage-api-key")]),
    ],
)
def test_objects_follow_what_the_spec_needs(name: str, expected: list[tuple[str, str]]) -> None:
    assert kinds_and_names(build_manifests(spec_named(name), CONSTRAINTS)) == expected


def test_static_credentials_secret_has_the_keys_the_values_reference() -> None:
    secret = next(m for m in build_manifests(spec_named("onprem")) if m["metadata"]["name"] == "astro-agent-aws-credentials")
    assert sorted(secret["stringData"]) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
