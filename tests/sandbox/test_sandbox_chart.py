"""The sandbox agent chart: helm lint, helm template with the example values, and helm's own schema
check. No cluster needed: helm runs offline with its home directories in a temporary directory."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "sandbox" / "chart"
HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "astro-agent"
IRSA = "eks.amazonaws.com/role-arn"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed; run scripts/setup.sh")

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm")
    return {
        "PATH": "/usr/bin:/bin",
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *map(str, args)], env=env, capture_output=True, text=True, timeout=60)


def render(env: dict[str, str], values: Path) -> list[Manifest]:
    result = helm(env, "template", RELEASE, CHART, "--values", values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def tutorial(helm_env: dict[str, str]) -> list[Manifest]:
    return render(helm_env, CHART / "ci" / "tutorial-values.yaml")


@pytest.fixture(scope="module")
def multi_queue(helm_env: dict[str, str]) -> list[Manifest]:
    return render(helm_env, CHART / "ci" / "multi-queue-values.yaml")


def names(manifests: list[Manifest], kind: str) -> set[str]:
    return {m["metadata"]["name"] for m in manifests if m["kind"] == kind}


def agent_containers(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The agent container of each worker / Dag processor / triggerer Deployment, by Deployment name."""
    return {
        m["metadata"]["name"]: m["spec"]["template"]["spec"]["containers"][0]
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["labels"]["component"] != "sentinel"
    }


def env_values(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_chart_schema_is_the_provider_schema() -> None:
    provider_schema = ROOT / "include" / "schemas" / "agent-values.schema.json"
    assert (CHART / "values.schema.json").read_bytes() == provider_schema.read_bytes()


def test_helm_lint_passes_without_warnings(helm_env: dict[str, str]) -> None:
    result = helm(helm_env, "lint", CHART, "--strict")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[INFO]" not in result.stdout, result.stdout


def test_tutorial_values_render_the_named_deployments_and_service_accounts(tutorial: list[Manifest]) -> None:
    expected = {"my-agents-dag-processor", "my-agents-triggerer", "my-agents-sentinel", "my-agents-worker-default-worker"}

    assert names(tutorial, "Deployment") == expected
    # The real chart's documented defaults end in a `<name>` (here the release): remote-agents sets its own.
    assert names(tutorial, "ServiceAccount") == {
        f"my-agents-dag-processor-{RELEASE}", f"my-agents-triggerer-{RELEASE}", "my-agents-sentinel",
        "my-agents-worker-default-worker"}


def test_multi_queue_values_render_one_worker_per_queue(multi_queue: list[Manifest]) -> None:
    workers = {
        m["metadata"]["name"]: m["spec"]["selector"]["matchLabels"]["queue"]
        for m in multi_queue
        if m["kind"] == "Deployment" and m["metadata"]["labels"]["component"] == "worker"
    }

    assert workers == {"prod-worker-default-worker": "default", "prod-worker-etl": "etl", "prod-worker-ml": "ml-gpu"}
    assert names(multi_queue, "ServiceAccount") == {*workers, f"prod-dag-processor-{RELEASE}", f"prod-triggerer-{RELEASE}",
                                                    "prod-sentinel"}


def test_every_deployment_runs_as_its_own_service_account(multi_queue: list[Manifest]) -> None:
    accounts = names(multi_queue, "ServiceAccount")
    used = [m["spec"]["template"]["spec"]["serviceAccountName"] for m in multi_queue if m["kind"] == "Deployment"]
    assert len(set(used)) == len(used) and set(used) <= accounts


def test_service_account_names_in_the_values_replace_every_default(helm_env: dict[str, str], tmp_path: Path) -> None:
    """What remote-agents renders: each component's ServiceAccount named, as its IRSA trust names it."""
    values = yaml.safe_load((CHART / "ci" / "multi-queue-values.yaml").read_text())
    values["serviceAccount"].update({"dagProcessor": {"name": "prod-dag-processor"}, "triggerer": {"name": "prod-triggerer"}})
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(values))
    accounts = {m["metadata"]["name"]: m["spec"]["template"]["spec"]["serviceAccountName"]
                for m in render(helm_env, path) if m["kind"] == "Deployment"}
    assert accounts["prod-dag-processor"] == "prod-dag-processor" and accounts["prod-triggerer"] == "prod-triggerer"


def test_irsa_annotation_is_on_every_service_account(tutorial: list[Manifest], multi_queue: list[Manifest]) -> None:
    tutorial_roles = {m["metadata"]["name"]: m["metadata"]["annotations"][IRSA] for m in tutorial if m["kind"] == "ServiceAccount"}
    multi_roles = {m["metadata"]["name"]: m["metadata"]["annotations"][IRSA] for m in multi_queue if m["kind"] == "ServiceAccount"}

    assert set(tutorial_roles.values()) == {"arn:aws:iam::123456789012:role/AirflowS3LoggerXComRole"}
    assert multi_roles.pop("prod-worker-etl") == "arn:aws:iam::123456789012:role/prod-etl"
    assert set(multi_roles.values()) == {"arn:aws:iam::123456789012:role/prod-agents"}


def test_common_env_is_in_every_agent_container(tutorial: list[Manifest]) -> None:
    values = yaml.safe_load((CHART / "ci" / "tutorial-values.yaml").read_text())
    common_env = {e["name"]: e["value"] for e in values["commonEnv"]}
    containers = agent_containers(tutorial)

    assert len(containers) == 3
    for container in containers.values():
        assert env_values(container).items() >= common_env.items()


def test_agent_containers_get_backends_bundles_and_token_from_values(tutorial: list[Manifest]) -> None:
    for container in agent_containers(tutorial).values():
        env = env_values(container)
        assert env["AIRFLOW__CORE__XCOM_BACKEND"] == "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
        assert env["AIRFLOW__SECRETS__BACKEND"] == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
        assert "GitDagBundle" in env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"]
        assert env["ASTRO_AGENT_CLIENT_API_URL"] == "https://clmyclusterid.external.astronomer.run/dmydeploy"
        assert env["ASTRO_AGENT_CLIENT_API_TOKEN"] == {"secretKeyRef": {"name": "my-agent-token", "key": "token"}}


def test_agent_containers_run_their_entrypoint_command(tutorial: list[Manifest]) -> None:
    args = {name: c["args"] for name, c in agent_containers(tutorial).items()}

    assert args == {
        "my-agents-dag-processor": ["dag-processor"],
        "my-agents-triggerer": ["triggerer"],
        "my-agents-worker-default-worker": ["worker"],
    }


def test_worker_pythonpath_is_an_explicit_path_list(tutorial: list[Manifest]) -> None:
    worker = agent_containers(tutorial)["my-agents-worker-default-worker"]

    assert env_values(worker)["PYTHONPATH"] == "/shared/packages"
    assert {"name": "shared-packages", "mountPath": "/shared/packages", "readOnly": True} in worker["volumeMounts"]


@pytest.mark.parametrize("kubernetes_version", ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"])
def test_every_rendered_object_is_valid_kubernetes(
    tutorial: list[Manifest], multi_queue: list[Manifest], kubernetes_version: str
) -> None:
    for manifest in tutorial + multi_queue:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)


@pytest.mark.parametrize(
    ("bad_values", "key"),
    [
        pytest.param({"workers": [{"name": "w", "queues": "a,b"}]}, "/workers/0/queues", id="two-queues-in-one-entry"),
        pytest.param({"workers": {"w": {"queues": "a"}}}, "/workers", id="workers-as-map"),
        pytest.param({"commonEnv": [{"name": "X", "value": True}]}, "/commonEnv/0/value", id="boolean-common-env-value"),
        pytest.param({"resourceNamePrefix": ""}, "/resourceNamePrefix", id="empty-resource-name-prefix"),
        pytest.param({"workers": [{"name": "w", "queues": "a", "replicas": 0}]}, "/workers/0/replicas", id="replicas-zero"),
        pytest.param({"dagBundleConfigList": [{"name": "dags"}]}, "/dagBundleConfigList", id="dag-bundle-config-list-as-list"),
        pytest.param({"comonEnv": []}, "comonEnv", id="misspelled-top-level-key"),
    ],
)
def test_helm_rejects_bad_values_naming_the_key(
    helm_env: dict[str, str], tmp_path: Path, bad_values: dict[str, Any], key: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(bad_values))

    result = helm(helm_env, "template", RELEASE, CHART, "--values", values)

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert key in result.stderr, result.stderr
