"""Chart values rendered from every example spec (render/values.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from jsonschema import Draft202012Validator

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render.policies import build_role_arns
from remote_agents.render.values import (
    GIT_DAG_BUNDLE,
    LOCAL_DAG_BUNDLE,
    ROLE_ARN_ANNOTATION,
    STATE_STORE_BACKEND,
    agent_runtime_warning,
    build_values,
)
from remote_agents.spec import EnvironmentSpec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
SCHEMA = ROOT / "include" / "schemas" / "agent-values.schema.json"
ACCOUNT = "123456789012"
CREDENTIAL_ENV_SUFFIXES = ("_TOKEN", "_PASSWORD", "_ACCESS_KEY_ID", "_SECRET_ACCESS_KEY", "_API_KEY")


def spec_named(name: str) -> EnvironmentSpec:
    return load_spec(ROOT / "include" / "environments" / f"{name}.yaml")


REPORTED_URL = "https://clreported.external.astronomer.run/d1reported"
REPORTED_NAMESPACE = "ultraviolet-corona-6870"


def render(spec: EnvironmentSpec) -> dict[str, Any]:
    return build_values(spec, build_role_arns(spec, ACCOUNT) if spec.irsa else None, deployment_api_url=REPORTED_URL,
                        deployment_namespace=REPORTED_NAMESPACE)


def with_changes(name: str, **changes: Any) -> EnvironmentSpec:
    data = spec_named(name).model_dump(mode="json", exclude_defaults=True)
    data.update(changes)
    return parse_spec(data)


def env_of(values: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["commonEnv"]}


@pytest.fixture(params=SPEC_FILES, ids=lambda p: p.stem)
def spec(request: pytest.FixtureRequest) -> EnvironmentSpec:
    return load_spec(request.param)


def test_values_have_the_required_chart_keys(spec: EnvironmentSpec) -> None:
    values = render(spec)
    assert {
        "resourceNamePrefix", "namespace", "createNamespace", "astroDeploymentAPIURL", "image",
        "imagePullSecretName", "agentTokenSecretName", "secretBackend", "xcomBackend",
        "dagBundleConfigList", "commonEnv", "workers", "sentinel",
    } <= values.keys()
    assert values["createNamespace"] is False


def test_values_validate_against_the_chart_schema(spec: EnvironmentSpec) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    assert [f"{e.json_path}: {e.message}" for e in validator.iter_errors(render(spec))] == []


def test_each_worker_consumes_exactly_one_queue(spec: EnvironmentSpec) -> None:
    workers = render(spec)["workers"]
    assert [(w["name"], w["queues"]) for w in workers] == [(w.name, w.queue) for w in spec.workers]
    assert all(isinstance(w["queues"], str) and "," not in w["queues"] for w in workers)


def test_worker_requests_equal_limits_including_ephemeral_storage(spec: EnvironmentSpec) -> None:
    for worker in render(spec)["workers"]:
        assert worker["resources"]["requests"] == worker["resources"]["limits"]
        assert set(worker["resources"]["requests"]) == {"cpu", "memory", "ephemeral-storage"}


def test_values_name_secrets_but_hold_no_secret_values(spec: EnvironmentSpec) -> None:
    values = render(spec)
    assert not {"agentToken", "imagePullSecretData", "sentinelAuthSecret"} & values.keys()
    assert "apiKey" not in values.get("openLineage", {})
    text = json.dumps(values).lower()
    assert "password" not in text and "<set-at-run-time>" not in text
    for env in [*values["commonEnv"], *(e for w in values["workers"] for e in w["env"])]:
        if env["name"].endswith(CREDENTIAL_ENV_SUFFIXES):
            assert "value" not in env, env["name"]
    assert set(json.loads(env_of(values)["AIRFLOW_CONN_AWS_DEFAULT"])) == {"conn_type", "extra"}


def test_common_env_values_are_all_strings(spec: EnvironmentSpec) -> None:
    assert all(isinstance(item["value"], str) for item in render(spec)["commonEnv"])


def test_pythonpath_is_an_explicit_path_list(spec: EnvironmentSpec) -> None:
    paths = [e["value"] for w in render(spec)["workers"] for e in w["env"] if e["name"] == "PYTHONPATH"]
    assert len(paths) == sum(1 for w in spec.workers if w.pip_packages)
    assert all("$" not in path for path in paths)


def test_dag_bundle_config_list_is_a_json_string_of_the_bundles(spec: EnvironmentSpec) -> None:
    bundles = json.loads(render(spec)["dagBundleConfigList"])
    if spec.dag_bundles:
        assert [(b["name"], b["classpath"]) for b in bundles] == [(b.name, GIT_DAG_BUNDLE) for b in spec.dag_bundles]
        assert all(set(b["kwargs"]) == {"git_conn_id", "tracking_ref", "subdir", "refresh_interval", "repo_url"} for b in bundles)
    else:
        assert bundles == [{"name": "dags-folder", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {}}]


def test_xcom_path_names_the_connection_bucket_and_prefix(spec: EnvironmentSpec) -> None:
    xcom = spec.backends.xcom
    assert env_of(render(spec))["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] == f"s3://aws_default@{xcom.bucket}/{xcom.prefix}"


def test_secrets_backend_kwargs_carry_both_prefixes_and_region(spec: EnvironmentSpec) -> None:
    kwargs = json.loads(env_of(render(spec))["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    assert kwargs == {
        "connections_prefix": spec.backends.secrets.connections_prefix,
        "variables_prefix": spec.backends.secrets.variables_prefix,
        "region_name": spec.backends.aws_region,
    }


def test_remote_logging_is_on_and_points_at_the_log_prefix(spec: EnvironmentSpec) -> None:
    env = env_of(render(spec))
    assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == f"s3://{spec.backends.logs.bucket}/{spec.backends.logs.prefix}"


def test_chart_labels_merge_spec_labels_with_the_environment_label(spec: EnvironmentSpec) -> None:
    assert render(spec)["labels"] == {**spec.labels, naming.ENVIRONMENT_LABEL: spec.name}


@pytest.mark.parametrize("version, present", [("2.1.0", False), ("2.2.0", True), ("2.3.3", True)])
def test_open_lineage_block_is_present_from_chart_2_2(version: str, present: bool) -> None:
    values = render(with_changes("tutorial", chart={"version": version}))
    assert ("openLineage" in values) is present
    if present:
        assert values["openLineage"] == {"enabled": False}


def test_open_lineage_enabled_is_complete_as_astros_downloaded_values() -> None:
    spec = spec_named("multi-queue")
    values = render(spec)
    identity = {"ASTRO_ORGANIZATION_ID": spec.astro.organization_id, "ASTRO_DEPLOYMENT_ID": spec.astro.deployment_id,
                "ASTRO_DEPLOYMENT_NAMESPACE": REPORTED_NAMESPACE}
    if spec.astro.workspace_id:
        identity["ASTRO_WORKSPACE_ID"] = spec.astro.workspace_id
    lineage = values["openLineage"]
    assert lineage["apiKeySecret"] == naming.openlineage_secret_name(spec) and lineage["namespace"] == REPORTED_NAMESPACE
    assert lineage["url"] == "https://o11y.astronomer.io"
    path, _, query = lineage["endpoint"].partition("?")
    assert path == "/api/v1/lineage" and dict(parse_qsl(query)) == identity
    assert sorted(lineage["facetsEnvironmentVariables"]) == sorted(identity)
    common = {item["name"]: item["value"] for item in values["commonEnv"]}
    assert {name: common[name] for name in identity} == identity  # every facet variable is set on the agents


def test_open_lineage_without_the_deployment_namespace_is_refused() -> None:
    spec = spec_named("multi-queue")
    with pytest.raises(ConfigError, match="chart.open_lineage: the Deployment's namespace"):
        build_values(spec, build_role_arns(spec, ACCOUNT), deployment_api_url=REPORTED_URL)


@pytest.mark.parametrize("name", ["sandbox", "multi-queue", "tutorial", "onprem"])
def test_state_store_backend_is_set_from_chart_2_3_even_when_the_spec_is_silent(name: str) -> None:
    # Agents >= 1.8 on Runtime 3.3 refuse to start without a state store (reference 3.1).
    spec = spec_named(name)
    values = render(spec)
    assert values["stateStoreBackend"] == STATE_STORE_BACKEND
    assert env_of(values)["AIRFLOW__COMMON_IO__STATE_STORE_OBJECTSTORAGE_PATH"] == (
        f"s3://aws_default@{spec.backends.xcom.bucket}/{spec.state_store.prefix}"
    )


def test_state_store_backend_is_left_out_before_chart_2_3() -> None:
    values = render(with_changes("tutorial", chart={"version": "2.2.0"}))
    assert "stateStoreBackend" not in values


@pytest.mark.parametrize("sentinel", [True, False])
def test_sentinel_enabled_follows_the_spec(sentinel: bool) -> None:
    assert render(with_changes("tutorial", chart={"sentinel": sentinel}))["sentinel"] == {"enabled": sentinel}


NAMED_ACCOUNTS = {"dagProcessor": {"name": "astro-agent-dag-processor"}, "triggerer": {"name": "astro-agent-triggerer"}}


def test_single_irsa_role_annotates_every_service_account() -> None:
    spec = spec_named("tutorial")
    arn = f"arn:aws:iam::{ACCOUNT}:role/AirflowS3LoggerXComRole"
    assert render(spec)["serviceAccount"] == {"annotations": {ROLE_ARN_ANNOTATION: arn}, **NAMED_ACCOUNTS}


def test_per_component_roles_annotate_each_component_service_account() -> None:
    service_account = render(spec_named("multi-queue"))["serviceAccount"]
    assert service_account == {
        key: {**({"name": f"agents-{component}"} if key != "workers" else {}),
              "annotations": {ROLE_ARN_ANNOTATION: f"arn:aws:iam::{ACCOUNT}:role/multi-queue-remote-agents-{component}"}}
        for key, component in (("dagProcessor", "dag-processor"), ("triggerer", "triggerer"), ("workers", "worker"))
    }


def test_every_service_account_is_named_in_the_values_and_trusted_by_exactly_that_name() -> None:
    """No ServiceAccount name the trust policy pins is left to a chart default (issue #15)."""
    spec = spec_named("multi-queue")
    values = render(spec)
    named = {values["serviceAccount"]["dagProcessor"]["name"], values["serviceAccount"]["triggerer"]["name"],
             *(worker["serviceAccount"]["name"] for worker in values["workers"])}
    trusted = {subject.rsplit(":", 1)[1] for subject in naming.service_account_subjects(spec)}
    assert named == trusted


def test_static_credentials_reach_every_component_through_secret_key_refs() -> None:
    values = render(spec_named("onprem"))
    expected = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "astro-agent-aws-credentials", "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    assert values["serviceAccount"] == {"dagProcessor": {"name": "astro-agent-dag-processor"},
                                        "triggerer": {"name": "astro-agent-triggerer"}}
    assert values["dagProcessor"]["env"] == values["triggerer"]["env"] == expected
    assert all(w["env"] == expected for w in values["workers"])


def test_irsa_spec_without_role_arns_is_refused() -> None:
    with pytest.raises(ConfigError, match="role_arns"):
        build_values(spec_named("tutorial"))


def test_per_component_spec_with_a_single_role_arn_is_refused() -> None:
    with pytest.raises(ConfigError, match="dag-processor"):
        build_values(spec_named("multi-queue"), {None: f"arn:aws:iam::{ACCOUNT}:role/one"})


def test_static_credentials_spec_with_role_arns_is_refused() -> None:
    with pytest.raises(ConfigError, match="static-credentials"):
        build_values(spec_named("onprem"), {None: f"arn:aws:iam::{ACCOUNT}:role/one"})


def test_pip_install_init_container_uses_the_agent_image_and_constraints() -> None:
    spec = spec_named("multi-queue")
    ml = next(w for w in render(spec)["workers"] if w["name"] == "ml")
    (init,) = ml["initContainers"]
    assert init["image"] == spec.astro.agent_image
    assert init["command"][:2] == ["pip", "install"]
    assert init["command"][-1] == "scikit-learn==1.6.1"
    assert "--constraint" in init["command"] and "/constraints/constraints.txt" in init["command"]
    assert {"name": "constraints", "configMap": {"name": naming.constraints_configmap_name(spec)}} in ml["volumes"]
    assert ml["volumeMounts"] == [{"name": "shared-packages", "mountPath": "/shared/packages", "readOnly": True}]


def test_workers_without_pip_packages_get_no_init_container() -> None:
    workers = render(spec_named("multi-queue"))["workers"]
    assert [w["name"] for w in workers if "initContainers" in w] == ["ml"]


def test_the_spec_url_wins_over_the_one_astro_reports() -> None:
    spec = spec_named("tutorial")
    assert render(spec)["astroDeploymentAPIURL"] == spec.astro.deployment_api_url


def test_without_a_spec_url_the_reported_one_is_used_and_without_both_it_is_refused() -> None:
    spec = spec_named("sandbox")
    assert spec.astro.deployment_api_url is None
    assert render(spec)["astroDeploymentAPIURL"] == REPORTED_URL
    with pytest.raises(ConfigError, match="astro.deployment_api_url: not in the spec and not read from Astro"):
        build_values(spec, build_role_arns(spec, ACCOUNT))


@pytest.mark.parametrize(("deployment_runtime", "warned"), [
    ("3.1-5", True), ("3.3-0", True), ("3.3-1", False), ("3.4-2", False), ("NA", False), (None, False)])
def test_agent_image_newer_than_the_deployment_is_warned_about(deployment_runtime: str | None, warned: bool) -> None:
    spec = spec_named("tutorial")  # agent image of Runtime 3.3-1
    warning = agent_runtime_warning(spec, deployment_runtime)
    assert (warning is not None) == warned
    if warning:
        assert warning.startswith("astro.agent_image: its Runtime 3.3-1 is newer than the Deployment's")
