"""The Kubernetes API emulator through real clients: the official Python client, KubernetesHook, plain HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sandbox.kube import KubeEmulator

pytestmark = pytest.mark.sandbox

READY_DELAY = 0.3


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(ready_delay=READY_DELAY)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def kubeconfig(emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")


@pytest.fixture(scope="module")
def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(str(kubeconfig))


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(autouse=True)
def clear_faults(emulator: KubeEmulator) -> Iterator[None]:
    yield
    emulator.faults.clear()


def deployment(name: str, replicas: Any = 1, image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]}]},
            },
        },
    }


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def admin(emulator: KubeEmulator, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emulator.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


# --- server-set metadata and CRUD -----------------------------------------------------------------
def test_version_reports_configured_kubernetes_version(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert (info.major, info.minor, info.git_version) == ("1", "33", "v1.33.0")


def test_create_sets_uid_resource_version_and_timestamp(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert created.metadata.uid and created.metadata.creation_timestamp
    updated = core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "2"}})
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    assert updated.metadata.uid == created.metadata.uid


def test_get_missing_object_is_404_not_found(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_secret("missing", namespace)
    assert raised.value.status == 404
    assert status_of(raised.value)["reason"] == "NotFound"
    assert status_of(raised.value)["message"] == 'secrets "missing" not found'


def test_duplicate_create_is_409_already_exists(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret(namespace, {"metadata": {"name": "dup"}})
    assert (raised.value.status, status_of(raised.value)["reason"]) == (409, "AlreadyExists")


def test_put_with_stale_resource_version_is_409_conflict(core: client.CoreV1Api, namespace: str) -> None:
    stale = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "2"}})
    stale.data = {"a": "3"}
    with pytest.raises(ApiException) as raised:
        core.replace_namespaced_config_map("cm", namespace, stale)
    assert (raised.value.status, status_of(raised.value)["reason"]) == (409, "Conflict")


def test_put_with_current_resource_version_replaces(core: client.CoreV1Api, namespace: str) -> None:
    current = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    current.data = {"b": "2"}
    assert core.replace_namespaced_config_map("cm", namespace, current).data == {"b": "2"}


def test_missing_name_is_422_naming_metadata_name(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret(namespace, {"metadata": {}})
    assert raised.value.status == 422
    assert status_of(raised.value)["details"]["causes"][0]["field"] == "metadata.name"


def test_generate_name_gets_a_random_suffix(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_secret(namespace, {"metadata": {"generateName": "token-"}})
    assert created.metadata.name.startswith("token-") and len(created.metadata.name) == len("token-") + 5


def test_string_data_is_folded_into_base64_data(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"token": "abc"}})
    assert created.data == {"token": "YWJj"} and created.string_data is None
    assert created.type == "Opaque"


def test_write_into_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret("no-such-namespace", {"metadata": {"name": "s"}})
    assert raised.value.status == 404
    assert status_of(raised.value)["details"] == {"name": "no-such-namespace", "kind": "namespaces"}


def test_deleting_namespace_deletes_its_objects(core: client.CoreV1Api, emulator: KubeEmulator, namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}})
    core.delete_namespace(namespace)
    assert emulator.list_objects("Secret", namespace=namespace) == []
    with pytest.raises(ApiException):
        core.read_namespace(namespace)


def test_label_selectors(core: client.CoreV1Api, namespace: str) -> None:
    for name, labels in {"a": {"tier": "web", "env": "prod"}, "b": {"tier": "db"}, "c": {}}.items():
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(namespace, label_selector=selector).items]

    assert names("tier=web") == ["a"]
    assert names("tier!=web") == ["b", "c"]
    assert names("tier in (web, db)") == ["a", "b"]
    assert names("tier notin (web)") == ["b", "c"]
    assert names("env") == ["a"]
    assert names("!tier") == ["c"]
    assert names("tier=web,env=prod") == ["a"]


def test_field_selector_on_name(core: client.CoreV1Api, namespace: str) -> None:
    for name in ("x", "y"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    found = core.list_namespaced_config_map(namespace, field_selector="metadata.name=y")
    assert [i.metadata.name for i in found.items] == ["y"]


def test_list_has_kind_and_resource_version(api_client: client.ApiClient, namespace: str) -> None:
    body = client.CoreV1Api(api_client).list_namespaced_secret(namespace, _preload_content=False)
    listed = json.loads(body.data)
    assert listed["kind"] == "SecretList" and int(listed["metadata"]["resourceVersion"]) > 0


# --- validation, patches, apply, dry run ----------------------------------------------------------
def test_invalid_replicas_type_is_422_naming_the_field(apps: client.AppsV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(namespace, deployment("web", replicas="three"))
    assert raised.value.status == 422
    cause = status_of(raised.value)["details"]["causes"][0]
    assert cause["field"] == "spec.replicas"


def test_unknown_field_is_422_naming_the_field(apps: client.AppsV1Api, namespace: str) -> None:
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"][0]["imag"] = "typo"
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(namespace, body)
    assert raised.value.status == 422
    assert "spec.template.spec.containers[0].imag" in status_of(raised.value)["message"]


def test_strategic_merge_patch_merges_containers_by_name(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}}}}
    patched = apps.patch_namespaced_deployment("web", namespace, patch)
    container = patched.spec.template.spec.containers[0]
    assert container.image == "nginx:1.27"
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "2")]
    assert patched.metadata.generation == 2


def test_json_patch(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    patched = core.patch_namespaced_config_map(
        "cm", namespace, [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}]
    )
    assert patched.data == {"b": "2"}


def test_server_side_apply_creates_then_updates(api_client: client.ApiClient, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/applied"

    def apply(data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": data}
        response = api_client.call_api(
            path, "PATCH", query_params=[("fieldManager", "remote-agents")], body=body,
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            _preload_content=False,
        )
        return response.status, json.loads(response.data)

    created_status, created = apply({"a": "1"})
    updated_status, updated = apply({"a": "2"})
    assert (created_status, updated_status) == (201, 200)
    assert updated["data"] == {"a": "2"}
    assert updated["metadata"]["managedFields"][0]["manager"] == "remote-agents"
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]


def test_dry_run_validates_without_storing(core: client.CoreV1Api, emulator: KubeEmulator, namespace: str) -> None:
    answered = core.create_namespaced_secret(namespace, {"metadata": {"name": "planned"}}, dry_run="All")
    assert answered.metadata.name == "planned"
    assert emulator.get_object("Secret", "planned", namespace) is None
    assert emulator.mutations[-1].dry_run


def test_no_op_update_keeps_resource_version(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    again = core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "1"}})
    assert again.metadata.resource_version == created.metadata.resource_version


# --- workloads ---------------------------------------------------------------------------------
def test_deployment_becomes_ready_after_delay_with_pods(apps: client.AppsV1Api, core: client.CoreV1Api,
                                                        namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web", replicas=2))
    assert not apps.read_namespaced_deployment("web", namespace).status.ready_replicas
    wait_until(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert {p.status.phase for p in pods} == {"Running"}
    assert pods[0].metadata.owner_references[0].kind == "ReplicaSet"


def test_changed_deployment_is_unready_until_delay_passes(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    wait_until(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 1)
    apps.patch_namespaced_deployment("web", namespace, deployment("web", image="nginx:1.28"))
    status = apps.read_namespaced_deployment("web", namespace).status
    assert status.observed_generation == 2 and not status.ready_replicas
    wait_until(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 1)


def test_never_ready_fault_shows_pod_reason(apps: client.AppsV1Api, core: client.CoreV1Api,
                                            emulator: KubeEmulator, namespace: str) -> None:
    emulator.faults.never_ready(namespace=namespace, name="web", reason="CrashLoopBackOff")
    apps.create_namespaced_deployment(namespace, deployment("web"))
    time.sleep(READY_DELAY + 0.1)
    assert not apps.read_namespaced_deployment("web", namespace).status.ready_replicas
    pod = core.list_namespaced_pod(namespace).items[0]
    assert pod.status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"


def test_job_completes_after_delay(api_client: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, {
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    })
    wait_until(lambda: batch.read_namespaced_job("once", namespace).status.succeeded == 1)


def test_watch_streams_status_changes(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    ready = None
    for event in watch.Watch().stream(apps.list_namespaced_deployment, namespace, timeout_seconds=5):
        if event["object"].status.ready_replicas == 1:
            ready = event["type"]
            break
    assert ready in ("ADDED", "MODIFIED")


def test_deleting_deployment_collects_its_pods(apps: client.AppsV1Api, emulator: KubeEmulator, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    apps.delete_namespaced_deployment("web", namespace)
    assert emulator.list_objects("Pod", namespace) == [] and emulator.list_objects("ReplicaSet", namespace) == []


# --- faults and observability ------------------------------------------------------------------
def test_injected_errors_fail_n_requests(core: client.CoreV1Api, emulator: KubeEmulator, namespace: str) -> None:
    emulator.faults.fail_requests(r"/secrets$", times=2, status=503)
    for _ in range(2):
        with pytest.raises(ApiException) as raised:
            core.list_namespaced_secret(namespace)
        assert raised.value.status == 503
    assert core.list_namespaced_secret(namespace).items == []


def test_injected_latency_slows_requests(core: client.CoreV1Api, emulator: KubeEmulator, namespace: str) -> None:
    emulator.faults.add_latency(0.3, path_pattern="/configmaps")
    started = time.monotonic()
    core.list_namespaced_config_map(namespace)
    assert time.monotonic() - started >= 0.3


def test_mutation_log_records_writes_not_reads(core: client.CoreV1Api, emulator: KubeEmulator, namespace: str) -> None:
    emulator.reset_counters()
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}}, field_manager="remote-agents")
    core.read_namespaced_secret("s", namespace)
    [mutation] = emulator.mutations
    assert (mutation.method, mutation.kind, mutation.name, mutation.field_manager, mutation.status) == (
        "POST", "Secret", "s", "remote-agents", 201)


def test_admin_endpoints_expose_mutations_objects_and_faults(core: client.CoreV1Api, emulator: KubeEmulator,
                                                             namespace: str) -> None:
    admin(emulator, "DELETE", "/sandbox/mutations")
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}})
    assert admin(emulator, "GET", "/sandbox/mutations")["count"] == 1
    objects = admin(emulator, "GET", f"/sandbox/objects?kind=Secret&namespace={namespace}")
    assert [o["metadata"]["name"] for o in objects["items"]] == ["s"]
    admin(emulator, "POST", "/sandbox/faults/fail-requests", {"path_pattern": "/secrets/s$", "times": 1, "status": 500})
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_secret("s", namespace)
    assert raised.value.status == 500
    admin(emulator, "POST", "/sandbox/faults/never-ready", {"namespace": namespace, "name": "web"})
    assert admin(emulator, "GET", "/sandbox/faults")["never_ready"][0]["reason"] == "ImagePullBackOff"
    assert admin(emulator, "DELETE", "/sandbox/faults")["never_ready"] == []


def test_two_emulators_do_not_share_state(emulator: KubeEmulator, core: client.CoreV1Api, namespace: str) -> None:
    other = KubeEmulator()
    other.start()
    try:
        assert other.url != emulator.url
        assert other.get_object("Namespace", namespace) is None
    finally:
        other.stop()


# --- Airflow KubernetesHook ----------------------------------------------------------------------
def test_kubernetes_hook_talks_to_the_emulator(kubeconfig: Path, emulator: KubeEmulator, namespace: str,
                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_SANDBOX_KUBE", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}))
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id="sandbox_kube")
    hook.core_v1_client.create_namespaced_service_account(namespace, {
        "metadata": {"name": "agent", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/a"}}})
    stored = emulator.get_object("ServiceAccount", "agent", namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/a"
    with pytest.raises(ApiException) as raised:
        hook.core_v1_client.create_namespaced_service_account(namespace, {"metadata": {"name": "agent"}})
    assert raised.value.status == 409


def test_stateful_set_becomes_ready_with_ordinal_pods(apps: client.AppsV1Api, core: client.CoreV1Api,
                                                      namespace: str) -> None:
    body = deployment("db", replicas=2)
    body["kind"], body["spec"]["serviceName"] = "StatefulSet", "db"
    apps.create_namespaced_stateful_set(namespace, body)
    wait_until(lambda: apps.read_namespaced_stateful_set("db", namespace).status.ready_replicas == 2)
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["db-0", "db-1"]
