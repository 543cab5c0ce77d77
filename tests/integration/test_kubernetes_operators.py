"""Namespace, Secret and ConfigMap operators against the sandbox's Kubernetes emulator (and moto for EKS)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_agents.errors import ClusterError, ConfigError
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.kubernetes import ClusterObjects
from remote_agents.naming import environment_ownership_labels
from remote_agents.operators.kubernetes import (
    DeleteConfigMapOperator,
    DeleteNamespaceOperator,
    DeleteSecretOperator,
    EnsureConfigMapOperator,
    EnsureNamespaceOperator,
    EnsureSecretOperator,
)

if TYPE_CHECKING:
    from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

NS = "astro-agents"
ENV = "sandbox"
KUBE = {"kubernetes_conn_id": "kubernetes_default"}
SECRET_VALUE = "s3cr3t-from-connection-0123456789"
CONSTRAINTS = Path(__file__).resolve().parents[2] / "include" / "agent-constraints.txt"


@pytest.fixture
def kube(sandbox: Sandbox) -> Iterator[Any]:
    sandbox.reset()
    yield sandbox.kube


@pytest.fixture
def source_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    set_source(monkeypatch, SECRET_VALUE)
    return "token_source"


def set_source(monkeypatch: pytest.MonkeyPatch, password: str, **extra: str) -> None:
    conn = {"conn_type": "generic", "login": "someone", "password": password, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_TOKEN_SOURCE", json.dumps(conn))


def writes(kube: Any) -> list[Any]:
    return [m for m in kube.mutations if not m.dry_run]


def ensure_namespace(**kwargs: Any) -> dict[str, Any]:
    return EnsureNamespaceOperator(task_id="namespace", namespace=NS, environment=ENV, **KUBE, **kwargs).execute({})


def secret_op(**kwargs: Any) -> EnsureSecretOperator:
    options = {"secret_name": "agent-token", "source_conn_id": "token_source", **KUBE, **kwargs}
    return EnsureSecretOperator(task_id="secret", namespace=NS, environment=ENV, **options)


def configmap_op(path: Path, **kwargs: Any) -> EnsureConfigMapOperator:
    options = {"configmap_name": "pip-constraints", "source_path": str(path), **KUBE, **kwargs}
    return EnsureConfigMapOperator(task_id="constraints", namespace=NS, environment=ENV, **options)


def actions(result: dict[str, Any]) -> list[str]:
    return [change["action"] for change in result["changes"]]


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def unowned(kind: str, name: str, namespace: str | None = None, **body: Any) -> None:
    """An object someone made by hand: no ownership labels."""
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    ClusterObjects(ClusterAccess(**KUBE)).create({"apiVersion": "v1", "kind": kind, "metadata": metadata, **body})


# -- namespace -------------------------------------------------------------------------------------


def test_namespace_is_created_with_ownership_labels(kube: Any) -> None:
    result = ensure_namespace(labels={"team": "data"})

    assert actions(result) == ["created"]
    labels = kube.get_object("Namespace", NS)["metadata"]["labels"]
    assert labels.items() >= {**environment_ownership_labels(ENV), "team": "data"}.items()


def test_namespace_second_run_is_unchanged_with_zero_writes(kube: Any) -> None:
    ensure_namespace()
    kube.reset_counters()

    assert actions(ensure_namespace()) == ["unchanged"]
    assert writes(kube) == []


def test_namespace_made_by_someone_else_is_used_but_not_relabelled(kube: Any) -> None:
    unowned("Namespace", NS)
    kube.reset_counters()

    result = ensure_namespace()

    assert (actions(result), result["managed"]) == (["unchanged"], False)
    assert writes(kube) == []


def test_namespace_dry_run_stores_nothing(kube: Any) -> None:
    result = ensure_namespace(dry_run="True")

    assert actions(result) == ["create"]
    assert kube.get_object("Namespace", NS) is None
    assert writes(kube) == []


def test_dry_run_before_the_eks_cluster_exists_is_skipped_with_the_reason(sandbox: Sandbox) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    sandbox.reset()
    eks = {"eks_cluster_name": "not-created-yet", "aws_conn_id": "aws_default", "region_name": sandbox.spec.backends.aws_region}
    planned = EnsureNamespaceOperator(task_id="namespace", namespace=NS, environment=ENV, dry_run="True", **eks)
    applied = EnsureNamespaceOperator(task_id="namespace", namespace=NS, environment=ENV, dry_run="False", **eks)

    with pytest.raises(AirflowSkipException, match="not-created-yet does not exist yet, so everything in it would be created"):
        planned.pre_execute({})
    applied.pre_execute({})  # not a dry run: no look-up, execute reports the missing cluster itself
    assert sandbox.aws.request_log.mutating_calls == []


def test_transient_api_error_is_retried(kube: Any) -> None:
    kube.faults.fail_requests("/api/v1/namespaces", times=1, status=503, method="POST")

    assert actions(ensure_namespace()) == ["created"]
    assert kube.get_object("Namespace", NS) is not None


def test_eks_cluster_name_reaches_the_cluster_through_the_aws_connection(sandbox: Sandbox, kube: Any) -> None:
    sandbox.aws.set_eks_delays(cluster_seconds=0, nodegroup_seconds=0)  # ACTIVE at once, whatever ran before
    eks = sandbox.aws.admin_client("eks")
    eks.create_cluster(name="agents", roleArn=f"arn:aws:iam::{sandbox.aws.account_id}:role/eks", resourcesVpcConfig={})

    result = EnsureNamespaceOperator(
        task_id="namespace", namespace=NS, environment=ENV,
        eks_cluster_name="agents", aws_conn_id="aws_default", region_name="us-east-1",
    ).execute({})

    assert actions(result) == ["created"]
    assert kube.get_object("Namespace", NS) is not None


# -- secrets from connections ----------------------------------------------------------------------


def test_secret_is_created_from_the_connection_password(kube: Any, source_conn: str) -> None:
    ensure_namespace()

    assert actions(secret_op().execute({})) == ["created"]
    secret = kube.get_object("Secret", "agent-token", NS)
    assert decoded(secret, "token") == SECRET_VALUE
    assert secret["metadata"]["labels"].items() >= environment_ownership_labels(ENV).items()


def test_secret_second_run_is_unchanged_with_zero_writes(kube: Any, source_conn: str) -> None:
    ensure_namespace()
    secret_op().execute({})
    kube.reset_counters()

    assert actions(secret_op().execute({})) == ["unchanged"]
    assert writes(kube) == []


def test_changed_connection_password_updates_the_secret_in_one_write(
    kube: Any, source_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_namespace()
    secret_op().execute({})
    kube.reset_counters()
    set_source(monkeypatch, "a-new-secret-value-9876543210")

    result = secret_op().execute({})

    assert actions(result) == ["updated"]
    assert list(result["changes"][0]["diff"]) == ["data.token"]
    assert [(m.method, m.kind) for m in writes(kube)] == [("PUT", "Secret")]
    assert decoded(kube.get_object("Secret", "agent-token", NS), "token") == "a-new-secret-value-9876543210"


def test_secret_value_appears_in_no_log_xcom_or_template_field(
    kube: Any, source_conn: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_namespace()
    caplog.set_level(logging.DEBUG)
    op = secret_op()

    result = op.execute({})

    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    seen = caplog.text + "".join(capsys.readouterr()) + json.dumps(result)
    seen += json.dumps({field: str(getattr(op, field)) for field in op.template_fields})
    assert "k8s:Secret/astro-agents/agent-token: created" in seen  # the capture did see the task's log
    assert SECRET_VALUE not in seen and encoded not in seen


def test_dockerconfigjson_secret_logs_in_as_cli_to_the_registry(kube: Any, source_conn: str) -> None:
    ensure_namespace()

    secret_op(secret_name="astro-registry", secret_type="dockerconfigjson").execute({})

    secret = kube.get_object("Secret", "astro-registry", NS)
    login = json.loads(decoded(secret, ".dockerconfigjson"))["auths"]["images.astronomer.cloud"]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert (login["username"], login["password"]) == ("cli", SECRET_VALUE)
    assert base64.b64decode(login["auth"]).decode() == f"cli:{SECRET_VALUE}"


def test_secret_value_can_come_from_a_connection_extra_key(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_source(monkeypatch, "unused-password", api_key="extra-held-secret-value")
    ensure_namespace()

    secret_op(source_field="extra.api_key", secret_key="api-key").execute({})

    assert decoded(kube.get_object("Secret", "agent-token", NS), "api-key") == "extra-held-secret-value"


def test_secret_made_by_hand_is_refused_with_the_fix(kube: Any, source_conn: str) -> None:
    ensure_namespace()
    unowned("Secret", "agent-token", NS, stringData={"token": "typed-in-by-hand"})

    with pytest.raises(ClusterError, match="delete it .* or label it"):
        secret_op().execute({})


def test_secret_dry_run_stores_nothing(kube: Any, source_conn: str) -> None:
    ensure_namespace()

    result = secret_op(dry_run=True).execute({})

    assert actions(result) == ["create"]
    assert kube.get_object("Secret", "agent-token", NS) is None


def test_secret_dry_run_before_the_namespace_exists_plans_a_create(kube: Any, source_conn: str) -> None:
    result = secret_op(dry_run=True).execute({})

    assert actions(result) == ["create"]
    assert kube.get_object("Namespace", NS) is None


def test_unknown_connection_field_is_a_config_error(kube: Any, source_conn: str) -> None:
    with pytest.raises(ConfigError, match="source_field"):
        secret_op(source_field="schema").execute({})


# -- ConfigMap -------------------------------------------------------------------------------------


def test_configmap_holds_the_constraints_file(kube: Any) -> None:
    ensure_namespace()

    assert actions(configmap_op(CONSTRAINTS).execute({})) == ["created"]
    stored = kube.get_object("ConfigMap", "pip-constraints", NS)
    assert stored["data"]["constraints.txt"] == CONSTRAINTS.read_text()


def test_configmap_second_run_is_unchanged_with_zero_writes(kube: Any) -> None:
    ensure_namespace()
    configmap_op(CONSTRAINTS).execute({})
    kube.reset_counters()

    assert actions(configmap_op(CONSTRAINTS).execute({})) == ["unchanged"]
    assert writes(kube) == []


def test_new_constraints_file_updates_only_the_configmap_data(kube: Any, tmp_path: Path) -> None:
    ensure_namespace()
    configmap_op(CONSTRAINTS).execute({})
    changed = tmp_path / "constraints.txt"
    changed.write_text(CONSTRAINTS.read_text() + "extra-package==1.0\n")
    kube.reset_counters()

    result = configmap_op(changed).execute({})

    assert actions(result) == ["updated"]
    assert list(result["changes"][0]["diff"]) == ["data.constraints.txt"]
    assert [(m.method, m.kind) for m in writes(kube)] == [("PUT", "ConfigMap")]
    stored = kube.get_object("ConfigMap", "pip-constraints", NS)["data"]["constraints.txt"]
    assert stored.endswith("extra-package==1.0\n")


def test_missing_constraints_file_is_a_config_error_naming_the_path(kube: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.txt"):
        configmap_op(tmp_path / "missing.txt").execute({})


# -- teardown --------------------------------------------------------------------------------------


def delete_secret_op() -> DeleteSecretOperator:
    return DeleteSecretOperator(task_id="d", namespace=NS, environment=ENV, secret_name="agent-token", **KUBE)


def test_delete_secret_removes_our_secret(kube: Any, source_conn: str) -> None:
    ensure_namespace()
    secret_op().execute({})

    result = delete_secret_op().execute({})

    assert actions(result) == ["deleted"]
    assert kube.get_object("Secret", "agent-token", NS) is None


def test_delete_of_an_object_already_gone_is_absent(kube: Any) -> None:
    ensure_namespace()

    result = DeleteConfigMapOperator(task_id="d", namespace=NS, environment=ENV, configmap_name="pip-constraints",
                                     **KUBE).execute({})

    assert actions(result) == ["absent"]


def test_delete_leaves_an_object_without_our_labels(kube: Any) -> None:
    ensure_namespace()
    unowned("Secret", "agent-token", NS, stringData={"token": "typed-in-by-hand"})

    result = delete_secret_op().execute({})

    assert actions(result) == ["unchanged"]
    assert kube.get_object("Secret", "agent-token", NS) is not None


def test_delete_namespace_removes_a_namespace_we_created(kube: Any) -> None:
    ensure_namespace()

    result = DeleteNamespaceOperator(task_id="d", namespace=NS, environment=ENV, **KUBE).execute({})

    assert actions(result) == ["deleted"]
    assert kube.get_object("Namespace", NS) is None


def test_delete_namespace_keeps_a_namespace_we_did_not_create(kube: Any) -> None:
    unowned("Namespace", NS)

    result = DeleteNamespaceOperator(task_id="d", namespace=NS, environment=ENV, **KUBE).execute({})

    assert actions(result) == ["unchanged"]
    assert kube.get_object("Namespace", NS) is not None


def test_aws_credentials_secret_holds_the_connection_keys_under_the_names_the_values_reference(
    kube: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "aws", "login": "AKIAONPREM", "password": "onprem-secret-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_AGENTS_AWS", json.dumps(conn))
    ensure_namespace()

    result = secret_op(secret_name="aws-keys", secret_type="aws-credentials", source_conn_id="agents_aws").execute({})

    data = kube.get_object("Secret", "aws-keys", NS)["data"]
    assert {k: base64.b64decode(v).decode() for k, v in data.items()} == {
        "AWS_ACCESS_KEY_ID": "AKIAONPREM", "AWS_SECRET_ACCESS_KEY": "onprem-secret-0123456789",
    }
    assert "onprem-secret" not in json.dumps(result)
