"""Helm operators against the sandbox: the real helm 3 binary, the sandbox chart, the Kubernetes emulator.

Values are the real ones rendered from include/environments/sandbox.yaml (the chart's schema checks
them); the namespace and the Secrets the values name are created first, as the bootstrap Dag does.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.log import mask_secret
from remote_agents import naming
from remote_agents.errors import HelmError
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.helm import (
    ChartRef,
    HelmHook,
    InvalidValuesError,
    ReleaseRevision,
    RolloutFailedError,
    upgrade_install_argv,
)
from remote_agents.operators.helm import HelmRollbackOperator, HelmUninstallOperator, HelmUpgradeInstallOperator
from remote_agents.render.manifests import build_manifests
from remote_agents.render.policies import build_role_arns
from remote_agents.render.values import build_values
from remote_agents.spec import EnvironmentSpec, load_spec
from remote_agents.triggers.rollout import RolloutTrigger

from sandbox.environment import DEFAULT_SPEC, Sandbox

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
CHART = str(ROOT / "sandbox" / "chart")
ACCOUNT = "123456789012"
CONN = "kubernetes_default"
HEAVY = "astro-agent-worker-heavy"
FAST = {"poll_interval": 0.1, "deferrable": False}


@pytest.fixture(scope="module")
def spec() -> EnvironmentSpec:
    return load_spec(DEFAULT_SPEC)


@pytest.fixture(scope="module")
def values(spec: EnvironmentSpec) -> dict[str, Any]:
    return build_values(spec, build_role_arns(spec, ACCOUNT), deployment_api_url="https://sandbox.external.astronomer.run/d1")


@pytest.fixture
def changed_values(values: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(values), "logLevel": "DEBUG"}


@pytest.fixture
def cluster(sandbox: Sandbox, spec: EnvironmentSpec) -> Iterator[Sandbox]:
    """An empty cluster with the namespace and the Secrets the values name (not the operator's to create)."""
    sandbox.reset()
    core = KubernetesHook(conn_id=CONN).core_v1_client
    for manifest in build_manifests(spec):
        if manifest["kind"] == "Namespace":
            core.create_namespace(body=manifest)
        else:
            core.create_namespaced_secret(spec.namespace, body=manifest)
    sandbox.kube.reset_counters()
    yield sandbox
    sandbox.kube.faults.clear()


def writes(sandbox: Sandbox) -> list[Any]:
    return [m for m in sandbox.kube.mutations if not m.dry_run]


def upgrade(spec: EnvironmentSpec, values: dict[str, Any], **kwargs: Any) -> HelmUpgradeInstallOperator:
    options = {"timeout": 20, **FAST, **kwargs}
    return HelmUpgradeInstallOperator(
        task_id="helm_upgrade", kubernetes_conn_id=CONN, release_name=spec.release_name, namespace=spec.namespace,
        chart=CHART, chart_repo_url=None, values=values, **options,
    )


def hook() -> HelmHook:
    return HelmHook(ClusterAccess(kubernetes_conn_id=CONN))


def last_revision(spec: EnvironmentSpec) -> ReleaseRevision:
    return hook().history(spec.release_name, spec.namespace)[-1]


def deployment_names(spec: EnvironmentSpec) -> list[str]:
    return sorted(w.name for w in naming.agent_workloads(spec))


# --- install / converge ---------------------------------------------------------------------------
def test_install_creates_revision_1_with_every_deployment_ready(cluster: Sandbox, spec: EnvironmentSpec,
                                                               values: dict[str, Any]) -> None:
    result = upgrade(spec, values).execute({})

    assert (result["revision"], result["status"], result["chart_version"]) == (1, "deployed", "2.3.3")
    assert result["changes"][0]["action"] == "created"
    for name in deployment_names(spec):
        deployment = cluster.kube.get_object("Deployment", name, namespace=spec.namespace)
        assert deployment["status"]["readyReplicas"] == deployment["spec"]["replicas"]


def test_rerun_with_same_values_makes_no_new_revision_and_no_mutating_request(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.reset_counters()

    result = upgrade(spec, values).execute({})

    assert result["changes"][0]["action"] == "unchanged"
    assert result["revision"] == 1
    assert writes(cluster) == []


def test_changed_values_upgrade_to_revision_2_and_report_the_values_diff(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})

    result = upgrade(spec, changed_values).execute({})

    assert result["revision"] == 2
    assert result["changes"][0]["action"] == "updated"
    assert result["changes"][0]["diff"] == {"values.logLevel": {"from": None, "to": "DEBUG"}}


def test_unready_rollout_rolls_back_and_names_the_workload_and_reason(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.never_ready(spec.namespace, name=HEAVY, reason="ImagePullBackOff")

    with pytest.raises(RolloutFailedError) as raised:
        upgrade(spec, changed_values, timeout=2).execute({})

    assert HEAVY in str(raised.value) and "ImagePullBackOff" in str(raised.value)
    assert list(raised.value.unready) == [HEAVY]
    assert last_revision(spec).revision == 3 and last_revision(spec).description == "Rollback to 1"
    assert hook().get_values(spec.release_name, spec.namespace) == values


def test_an_unchanged_release_whose_workloads_are_not_ready_fails_and_is_left_as_it_is(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.never_ready(spec.namespace, name=HEAVY, reason="CrashLoopBackOff")  # e.g. killed mid-rollout
    cluster.kube.reset_counters()

    with pytest.raises(RolloutFailedError, match="unchanged, so it is left as it is") as raised:
        upgrade(spec, values, timeout=2).execute({})

    assert list(raised.value.unready) == [HEAVY] and "CrashLoopBackOff" in str(raised.value)
    assert (last_revision(spec).revision, writes(cluster)) == (1, [])


def test_first_install_that_never_becomes_ready_is_uninstalled(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    cluster.kube.faults.never_ready(spec.namespace, name=HEAVY, reason="CrashLoopBackOff")

    with pytest.raises(RolloutFailedError, match="CrashLoopBackOff"):
        upgrade(spec, values, timeout=2).execute({})

    assert hook().get_release(spec.release_name, spec.namespace) is None


# --- recovery ----------------------------------------------------------------------------------
def kill_helm_mid_wait(cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], stuck_in: str) -> None:
    """Start `helm upgrade --install --wait` on a never-ready worker and SIGKILL it, as a killed worker would."""
    cluster.kube.faults.never_ready(spec.namespace, name=HEAVY)
    env = {"PATH": os.environ["PATH"], "KUBECONFIG": str(cluster.kubeconfig),
           **{k: v for k, v in cluster.env().items() if k.startswith("HELM_")}}
    argv = upgrade_install_argv(spec.release_name, spec.namespace, ChartRef(CHART, None), timeout=60, wait=True)
    helm = subprocess.Popen(["helm", *argv], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    assert helm.stdin is not None
    helm.stdin.write(json.dumps(values))
    helm.stdin.close()
    deadline = time.time() + 20
    while getattr(hook().get_release(spec.release_name, spec.namespace), "status", None) != stuck_in:
        assert time.time() < deadline, f"helm never reached {stuck_in}"
        time.sleep(0.1)
    helm.send_signal(signal.SIGKILL)  # helm gets no chance to mark the release failed
    helm.wait()
    cluster.kube.faults.clear()


def test_release_stuck_in_pending_upgrade_is_rolled_back_then_upgraded(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    upgrade(spec, values).execute({})
    kill_helm_mid_wait(cluster, spec, {**values, "logLevel": "WARNING"}, "pending-upgrade")
    capsys.readouterr()

    result = upgrade(spec, changed_values).execute({})

    assert result["recovered_from"] == "pending-upgrade"
    assert (result["revision"], result["status"]) == (4, "deployed")  # 2 stuck, 3 rollback to 1, 4 upgrade
    assert "stuck in pending-upgrade at revision 2" in capsys.readouterr().out
    assert hook().get_values(spec.release_name, spec.namespace) == changed_values


def test_first_install_stuck_in_pending_install_is_uninstalled_then_installed(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    kill_helm_mid_wait(cluster, spec, values, "pending-install")
    capsys.readouterr()

    result = upgrade(spec, values).execute({})

    assert (result["recovered_from"], result["revision"], result["status"]) == ("pending-install", 1, "deployed")
    assert "never deployed: uninstalling it" in capsys.readouterr().out


def history(spec: EnvironmentSpec) -> list[tuple[int, str, str]]:
    return [(r.revision, r.status.value, r.description) for r in hook().history(spec.release_name, spec.namespace)]


def test_an_upgrade_the_api_refuses_is_rolled_back_to_the_old_values_and_fails_the_task(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.fail_requests(r"/deployments/", times=1, status=500, method="PATCH")

    with pytest.raises(HelmError, match=r"(?s)helm upgrade --install .* failed.*500.*rolled back to revision 1 "
                                        r"\(now revision 3\)") as raised:
        upgrade(spec, changed_values).execute({})

    assert "sandbox fault: injected 500" in str(raised.value)
    assert [(revision, status) for revision, status, _ in history(spec)] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert history(spec)[-1][2] == "Rollback to 1"
    assert hook().get_values(spec.release_name, spec.namespace) == values


def test_a_first_install_the_api_refuses_is_uninstalled_and_fails_the_task(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    cluster.kube.faults.fail_requests(r"/deployments", times=1, status=500, method="POST")

    with pytest.raises(HelmError, match=r"(?s)failed.*500.*uninstalled the release"):
        upgrade(spec, values).execute({})

    assert hook().get_release(spec.release_name, spec.namespace) is None


def test_an_install_the_api_answers_503_is_undone_and_tried_again(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """helm does not retry a 503 (the API server is busy): the operator undoes the revision, then applies it again."""
    cluster.kube.faults.fail_requests(r"/deployments", times=1, status=503, method="POST")

    result = upgrade(spec, values).execute({})

    assert (result["status"], result["revision"]) == ("deployed", 1)
    assert "trying once more" in capsys.readouterr().out


def test_an_upgrade_the_api_keeps_answering_503_says_that_a_rerun_recovers(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.fail_requests(r"/deployments/", times=1000, status=503, method="PATCH")

    with pytest.raises(HelmError, match=r"(?s)unavailable or overloaded.*a re-run recovers.*rolled back to revision 1"):
        upgrade(spec, changed_values).execute({})

    assert hook().get_values(spec.release_name, spec.namespace) == values


def test_a_release_left_failed_is_rolled_back_first_so_a_rerun_converges(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.fail_requests(r"/deployments/", times=1, status=500, method="PATCH")
    with pytest.raises(HelmError):  # plain helm, as a worker killed before undoing it would leave the release
        hook().upgrade_install(spec.release_name, spec.namespace, ChartRef(CHART, None), {**values, "logLevel": "WARNING"})
    assert last_revision(spec).status.value == "failed"
    capsys.readouterr()

    result = upgrade(spec, changed_values).execute({})

    assert (result["recovered_from"], result["revision"], result["status"]) == ("failed", 4, "deployed")
    assert "is failed at revision 2" in capsys.readouterr().out
    assert history(spec)[2][2] == "Rollback to 1"  # 2 failed, 3 rollback to 1, 4 upgrade
    assert hook().get_values(spec.release_name, spec.namespace) == changed_values


def test_when_undoing_a_refused_upgrade_fails_too_the_next_run_recovers_and_converges(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    cluster.kube.faults.fail_requests(r"/deployments/", times=1000, status=500, method="PATCH")
    cluster.kube.faults.fail_requests(r"/secrets/", times=1000, status=500, method="PUT")  # helm's release records
    with pytest.raises(HelmError, match="(?s)undoing the upgrade failed too.*the next run rolls it back first"):
        upgrade(spec, changed_values).execute({})
    cluster.kube.faults.clear()

    result = upgrade(spec, changed_values).execute({})

    assert result["status"] == "deployed" and result["recovered_from"]
    assert hook().get_values(spec.release_name, spec.namespace) == changed_values


# --- deferral ----------------------------------------------------------------------------------
def test_execute_defers_to_rollout_trigger_with_primitive_kwargs(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    started = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        upgrade(spec, values, deferrable=True, timeout=120).execute({})

    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "remote_agents.triggers.rollout.RolloutTrigger"
    assert deferred.value.method_name == "execute_complete"
    assert kwargs["access"] == ClusterAccess(kubernetes_conn_id=CONN).to_dict()
    assert kwargs["namespace"] == spec.namespace
    assert sorted(kwargs["deployments"]) == deployment_names(spec)
    assert started + 120 <= kwargs["deadline"] <= time.time() + 120
    assert kwargs["return_value"]["revision"] == 1 and kwargs["return_value"]["previous_revision"] is None
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_rollout_trigger_yields_success_once_pods_pass_the_ready_delay(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    hook().upgrade_install(spec.release_name, spec.namespace, ChartRef(CHART, None), values)
    cluster.kube.ready_delay = 1.0
    trigger = RolloutTrigger(access=ClusterAccess(kubernetes_conn_id=CONN).to_dict(), namespace=spec.namespace,
                             deployments=deployment_names(spec), deadline=time.time() + 15, poll_interval=0.1)
    try:
        started = time.time()
        event = asyncio.run(anext(trigger.run()))
        waited = time.time() - started
    finally:
        cluster.kube.ready_delay = cluster.settings.ready_delay

    assert event.payload["status"] == "success"
    assert sorted(event.payload["ready"]) == deployment_names(spec)
    assert 0.3 < waited < 10


def test_execute_complete_with_failed_event_rolls_back_and_raises_the_diagnosis(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    hook().upgrade_install(spec.release_name, spec.namespace, ChartRef(CHART, None), changed_values)
    event = {
        "status": "failed", "message": "rollout timed out", "namespace": spec.namespace,
        "unready": {HEAVY: "0/1 ready, 1 updated; container worker: ImagePullBackOff [1 Pod]"},
        "return_value": {"release": spec.release_name, "namespace": spec.namespace, "revision": 2,
                         "previous_revision": 1, "changes": []},
    }

    with pytest.raises(RolloutFailedError, match=f"(?s)rolled back to revision 1.*{HEAVY}: .*ImagePullBackOff"):
        upgrade(spec, changed_values).execute_complete({}, event)

    assert last_revision(spec).description == "Rollback to 1"


def test_rollout_trigger_keeps_polling_through_transient_api_errors(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    hook().upgrade_install(spec.release_name, spec.namespace, ChartRef(CHART, None), values)
    cluster.kube.faults.fail_requests(r"/deployments/", times=3, status=503, method="GET")
    trigger = RolloutTrigger(access=ClusterAccess(kubernetes_conn_id=CONN).to_dict(), namespace=spec.namespace,
                             deployments=deployment_names(spec), deadline=time.time() + 15, poll_interval=0.1)

    event = asyncio.run(anext(trigger.run()))

    assert event.payload["status"] == "success"


def test_rollout_trigger_reports_an_error_when_it_may_not_read_deployments(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    hook().upgrade_install(spec.release_name, spec.namespace, ChartRef(CHART, None), values)
    cluster.kube.faults.fail_requests(r"/deployments/", times=1, status=403, method="GET")
    trigger = RolloutTrigger(access=ClusterAccess(kubernetes_conn_id=CONN).to_dict(), namespace=spec.namespace,
                             deployments=deployment_names(spec), deadline=time.time() + 15, poll_interval=0.1)

    event = asyncio.run(anext(trigger.run()))

    assert event.payload["status"] == "error"
    assert "HTTP 403" in event.payload["message"]


def test_execute_complete_with_error_event_keeps_the_release_and_raises(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    event = {"status": "error", "message": "reading Deployments failed: HTTP 403", "namespace": spec.namespace,
             "return_value": {"revision": 1, "previous_revision": None, "changes": []}}

    with pytest.raises(HelmError, match="could not be checked, so it was left in place"):
        upgrade(spec, values).execute_complete({}, event)

    assert hook().get_release(spec.release_name, spec.namespace).revision == 1


# --- dry run -----------------------------------------------------------------------------------
def test_dry_run_renders_the_plan_and_writes_nothing(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    result = upgrade(spec, values, dry_run=True).execute({})

    assert result["changes"][0]["action"] == "create"
    assert f"Deployment/{HEAVY}" in result["objects"]
    assert writes(cluster) == []
    assert hook().get_release(spec.release_name, spec.namespace) is None


# --- rollback / uninstall ----------------------------------------------------------------------
def test_rollback_operator_restores_a_revision_then_reports_unchanged(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], changed_values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    upgrade(spec, changed_values).execute({})
    rollback = HelmRollbackOperator(task_id="rollback", kubernetes_conn_id=CONN, release_name=spec.release_name,
                                    namespace=spec.namespace, revision=1)

    first = rollback.execute({})
    cluster.kube.reset_counters()
    second = rollback.execute({})

    assert (first["changes"][0]["action"], first["revision"]) == ("updated", 3)
    assert first["changes"][0]["diff"] == {"values.logLevel": {"from": "DEBUG", "to": None}}
    assert (second["changes"][0]["action"], second["revision"]) == ("unchanged", 3)
    assert writes(cluster) == []


def test_uninstall_removes_the_release_and_a_second_uninstall_is_absent(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    upgrade(spec, values).execute({})
    uninstall = HelmUninstallOperator(task_id="uninstall", kubernetes_conn_id=CONN, release_name=spec.release_name,
                                      namespace=spec.namespace)

    first = uninstall.execute({})
    second = uninstall.execute({})

    assert (first["changes"][0]["action"], second["changes"][0]["action"]) == ("deleted", "absent")
    assert hook().get_release(spec.release_name, spec.namespace) is None
    assert cluster.kube.get_object("Deployment", HEAVY, namespace=spec.namespace) is None


# --- EKS ---------------------------------------------------------------------------------------
def test_install_reaches_an_eks_cluster_through_the_aws_connection(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any]
) -> None:
    eks = cluster.aws.admin_client("eks")
    eks.create_cluster(name="agents", roleArn=f"arn:aws:iam::{cluster.aws.account_id}:role/eks", resourcesVpcConfig={})
    operator = HelmUpgradeInstallOperator(
        task_id="helm_upgrade", eks_cluster_name="agents", aws_conn_id="aws_default", region_name="us-east-1",
        release_name=spec.release_name, namespace=spec.namespace, chart=CHART, chart_repo_url=None, values=values,
        timeout=20, **FAST,
    )

    result = operator.execute({})

    assert (result["revision"], result["status"]) == (1, "deployed")
    assert {m.user_agent.split("/")[0] for m in writes(cluster)} >= {"Helm"}


# --- secrets -----------------------------------------------------------------------------------
CANARY = "canary-s3cr3t-7f1e9c2a"


def test_masked_value_in_values_never_reaches_logs_or_result(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mask_secret(CANARY)
    leaky = {**copy.deepcopy(values), "commonEnv": [*values["commonEnv"], {"name": "CANARY", "value": CANARY}]}

    result = upgrade(spec, leaky).execute({})

    assert "values.commonEnv" in result["changes"][0]["diff"]
    assert CANARY not in json.dumps(result)
    assert CANARY not in capsys.readouterr().out + caplog.text


def test_masked_value_in_rejected_values_is_redacted_in_the_error(
    cluster: Sandbox, spec: EnvironmentSpec, values: dict[str, Any], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mask_secret(CANARY.upper())
    rejected = {**values, "resourceNamePrefix": CANARY.upper()}  # not a DNS label: the schema quotes it back

    with pytest.raises(InvalidValuesError) as raised:
        upgrade(spec, rejected).execute({})

    assert "resourceNamePrefix" in str(raised.value)
    assert CANARY.upper() not in str(raised.value) + raised.value.stderr
    assert CANARY.upper() not in capsys.readouterr().out + caplog.text
