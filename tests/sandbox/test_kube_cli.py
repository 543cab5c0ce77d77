"""The Kubernetes API emulator driven by the real pinned kubectl and helm 3 binaries, with default flags."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.kube import KubeEmulator

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".tools" / "bin" / "helm"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
READY_DELAY = 0.5

DEPLOYMENT_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: main
        image: {image}
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(ready_delay=READY_DELAY)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def env(emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("cli")
    kubeconfig = emulator.write_kubeconfig(home / "kubeconfig")
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }


@pytest.fixture(scope="module")
def chart(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`helm create`'s chart: ServiceAccount, Service, Deployment (+ a test Pod hook, run only by `helm test`)."""
    workdir = tmp_path_factory.mktemp("chart")
    subprocess.run([str(HELM), "create", "demo"], cwd=workdir, env=env, check=True, capture_output=True)
    return workdir / "demo"


@pytest.fixture(autouse=True)
def clear_faults(emulator: KubeEmulator) -> Iterator[None]:
    yield
    emulator.faults.clear()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def run(env: dict[str, str], *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], env=env, input=stdin, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}")
    return result


def helm(env: dict[str, str], *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(env, HELM, *argv, check=check)


def kubectl(env: dict[str, str], *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(env, KUBECTL, *argv, check=check, stdin=stdin)


# --- kubectl -----------------------------------------------------------------------------------------
def test_kubectl_creates_namespace_and_secret(env: dict[str, str], emulator: KubeEmulator, namespace: str) -> None:
    kubectl(env, "create", "namespace", namespace)
    kubectl(env, "-n", namespace, "create", "secret", "generic", "token", "--from-literal=token=abc")
    got = json.loads(kubectl(env, "-n", namespace, "get", "secret", "token", "-o", "json").stdout)
    assert got["data"] == {"token": "YWJj"}
    assert "token" in kubectl(env, "-n", namespace, "get", "secrets,deployments").stdout


def test_kubectl_apply_client_side_twice_then_server_side(env: dict[str, str], emulator: KubeEmulator,
                                                          namespace: str) -> None:
    kubectl(env, "create", "namespace", namespace)
    manifest = DEPLOYMENT_YAML.format(namespace=namespace, image="nginx:1.27")
    assert "created" in kubectl(env, "apply", "-f", "-", stdin=manifest).stdout
    assert "unchanged" in kubectl(env, "apply", "-f", "-", stdin=manifest).stdout
    updated = DEPLOYMENT_YAML.format(namespace=namespace, image="nginx:1.28")
    assert "serverside-applied" in kubectl(env, "apply", "--server-side", "-f", "-", stdin=updated).stdout
    stored = emulator.get_object("Deployment", "web", namespace)
    assert stored is not None
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"


def test_kubectl_rollout_status_succeeds_after_ready_delay(env: dict[str, str], namespace: str) -> None:
    kubectl(env, "create", "namespace", namespace)
    kubectl(env, "apply", "-f", "-", stdin=DEPLOYMENT_YAML.format(namespace=namespace, image="nginx:1.27"))
    started = time.monotonic()
    result = kubectl(env, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=20s")
    assert "successfully rolled out" in result.stdout
    assert time.monotonic() - started >= READY_DELAY / 2


def test_kubectl_rejects_invalid_manifest_with_server_error(env: dict[str, str], namespace: str) -> None:
    kubectl(env, "create", "namespace", namespace)
    manifest = DEPLOYMENT_YAML.format(namespace=namespace, image="nginx").replace("replicas: 1", "replicas: three")
    result = kubectl(env, "apply", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0 and "replicas" in result.stderr


# --- helm --------------------------------------------------------------------------------------------
def test_helm_upgrade_install_twice_makes_revision_two(env: dict[str, str], chart: Path, emulator: KubeEmulator,
                                                       namespace: str) -> None:
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace")
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--set", "replicaCount=2")
    history = json.loads(helm(env, "history", "rel", "-n", namespace, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    assert json.loads(helm(env, "get", "values", "rel", "-n", namespace, "-o", "json").stdout) == {"replicaCount": 2}
    stored = emulator.get_object("Deployment", "rel-demo", namespace)
    assert stored is not None and stored["spec"]["replicas"] == 2
    releases = emulator.list_objects("Secret", namespace, label_selector="owner=helm,name=rel")
    assert sorted(s["metadata"]["name"] for s in releases) == ["sh.helm.release.v1.rel.v1", "sh.helm.release.v1.rel.v2"]


def test_helm_rollback_then_uninstall(env: dict[str, str], chart: Path, emulator: KubeEmulator, namespace: str) -> None:
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace")
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--set", "replicaCount=3")
    helm(env, "rollback", "rel", "1", "-n", namespace)
    stored = emulator.get_object("Deployment", "rel-demo", namespace)
    assert stored is not None and stored["spec"]["replicas"] == 1
    helm(env, "uninstall", "rel", "-n", namespace)
    assert emulator.list_objects("Deployment", namespace) == []
    assert emulator.list_objects("Secret", namespace) == []
    assert emulator.list_objects("Pod", namespace) == []


def test_helm_configmap_driver_stores_release_in_configmaps(env: dict[str, str], chart: Path,
                                                           emulator: KubeEmulator, namespace: str) -> None:
    helm(env | {"HELM_DRIVER": "configmap"}, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace")
    [release] = emulator.list_objects("ConfigMap", namespace, label_selector="owner=helm")
    assert release["metadata"]["name"] == "sh.helm.release.v1.rel.v1" and release["data"]["release"]


def test_helm_wait_succeeds_after_ready_delay(env: dict[str, str], chart: Path, emulator: KubeEmulator,
                                              namespace: str) -> None:
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace", "--wait", "--timeout", "20s")
    stored = emulator.get_object("Deployment", "rel-demo", namespace)
    assert stored is not None and stored["status"]["readyReplicas"] == 1


def test_helm_wait_times_out_on_never_ready_deployment(env: dict[str, str], chart: Path, emulator: KubeEmulator,
                                                       namespace: str) -> None:
    emulator.faults.never_ready(namespace=namespace, name="rel-demo", reason="ImagePullBackOff")
    result = helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace",
                  "--wait", "--timeout", "5s", check=False)
    assert result.returncode != 0 and "context deadline exceeded" in result.stderr
    [pod] = emulator.list_objects("Pod", namespace)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_helm_atomic_rolls_back_a_bad_image_upgrade(env: dict[str, str], chart: Path, emulator: KubeEmulator,
                                                    namespace: str) -> None:
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace")
    emulator.faults.never_ready(namespace=namespace, image=":broken", reason="ErrImagePull")
    result = helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--set", "image.tag=broken",
                  "--atomic", "--timeout", "3s", check=False)
    assert result.returncode != 0 and "rolled back" in result.stderr
    history = json.loads(helm(env, "history", "rel", "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "failed", "deployed"]
    stored = emulator.get_object("Deployment", "rel-demo", namespace)
    assert stored is not None
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] != "nginx:broken"


def test_helm_identical_upgrade_only_writes_release_records(env: dict[str, str], chart: Path, emulator: KubeEmulator,
                                                            namespace: str) -> None:
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace, "--create-namespace")
    emulator.reset_counters()
    helm(env, "upgrade", "--install", "rel", chart, "-n", namespace)
    # helm skips empty patches; what remains is release bookkeeping: create v2 (pending), mark it
    # deployed, mark v1 superseded
    assert sorted((m.method, m.kind) for m in emulator.mutations) == [
        ("POST", "Secret"), ("PUT", "Secret"), ("PUT", "Secret")]
