"""The drift Dag against the sandbox: bootstrapped (no drift), then one change at a time made behind
the bootstrap's back, each reported as exactly its finding; a bootstrap run repairs what it converges.

Tests run in file order on one bootstrapped environment; each undoes its change (by hand or with a
bootstrap run) before the next, and the notifications are read from the sandbox's webhook sink.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remote_agents import naming
from remote_agents.hooks.astro import AstroHook
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.kubernetes import ClusterObjects
from remote_agents.render.values import ROLE_ARN_ANNOTATION
from remote_agents.spec import EnvironmentSpec
from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "remote_agents_bootstrap__sandbox"
DRIFT = "remote_agents_drift__sandbox"


@pytest.fixture(scope="module")
def environment(sandbox: Sandbox, dagbag: Any) -> Iterator[Sandbox]:
    sandbox.reset()
    assert bootstrap(dagbag, sandbox) == "success"
    sandbox.webhook.clear()
    yield sandbox
    sandbox.webhook.clear()


def bootstrap(dagbag: Any, sandbox: Sandbox, force_upgrade: bool = False) -> str:
    """Every param given, because dag.test() keeps the previous run's conf."""
    run = dagbag.get_dag(BOOTSTRAP).test(run_conf={"dry_run": False, "rotate_tokens": False,
                                                   "force_upgrade": force_upgrade,
                                                   "skip_cluster_creation": False,
                                                   "chart_version": sandbox.spec.chart.version})
    return str(run.state)


def drift_run(dagbag: Any) -> tuple[str, list[str], dict[str, Any]]:
    """The run's state, its failed tasks and the report's XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run = dagbag.get_dag(DRIFT).test()
    with create_session() as session:
        report = session.query(XComModel).filter_by(dag_id=DRIFT, run_id=run.run_id, task_id="report",
                                                    key="return_value").one().value
    failed = sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed")
    return str(run.state), failed, report


def cluster(sandbox: Sandbox) -> ClusterObjects:
    return ClusterObjects(ClusterAccess(kubernetes_conn_id="kubernetes_default"))


def helm(sandbox: Sandbox, *args: str) -> str:
    result = subprocess.run(["helm", *args], env={**sandbox.env(), "PATH": str(ROOT / ".tools" / "bin")},
                            capture_output=True, text=True, check=True)
    return result.stdout


def only_finding(report: dict[str, Any]) -> dict[str, str]:
    (finding,) = report["findings"]
    return finding


def test_bootstrapped_environment_has_no_drift_and_the_check_writes_nothing(environment: Sandbox, dagbag: Any) -> None:
    environment.aws.request_log.clear()
    environment.kube.reset_counters()
    environment.astro.clear_calls()

    state, failed, report = drift_run(dagbag)

    assert (state, failed) == ("success", [])
    assert report == {"drifted": False, "drifted_areas": [], "notified": None, "findings": []}
    assert environment.aws.request_log.mutating_calls == []
    assert [m for m in environment.kube.mutations if not m.dry_run] == []
    assert environment.astro.mutating_calls == []


def test_hand_made_helm_upgrade_is_a_release_finding_until_a_bootstrap_repairs_it(
    environment: Sandbox, dagbag: Any
) -> None:
    spec = environment.spec
    environment.webhook.clear()
    helm(environment, "upgrade", spec.release_name, str(ROOT / "sandbox" / "chart"), "-n", spec.namespace,
         "--reuse-values", "--set", "logLevel=DEBUG")

    state, failed, report = drift_run(dagbag)
    assert (state, failed) == ("failed", ["a_task_failed", "check_release"])
    finding = only_finding(report)
    assert finding["component"] == f"Helm release {spec.namespace}/{spec.release_name}"
    assert finding["problem"] == "value logLevel differs from the rendered values"
    assert finding["evidence"] == "'DEBUG' -> spec (unset)"

    assert bootstrap(dagbag, environment) == "success"
    state, failed, report = drift_run(dagbag)
    assert (state, failed, report["findings"]) == ("success", [], [])
    incident, recovery = environment.webhook.messages
    assert incident["kind"] == "drift" and incident["status"] == "incident" and incident["drifted_areas"] == ["release"]
    assert "logLevel" in incident["text"] and recovery["status"] == "recovery"


def test_hand_edited_chart_deployment_is_a_finding_per_field_until_a_forced_bootstrap_repairs_it(
    environment: Sandbox, dagbag: Any
) -> None:
    spec = environment.spec
    name = naming.agent_workloads(spec)[0].name
    objects = cluster(environment)
    container = objects.get("Deployment", name, spec.namespace)["spec"]["template"]["spec"]["containers"][0]
    variable = next(e for e in container["env"] if e.get("value") and e["value"].isupper())
    objects.patch("Deployment", name, spec.namespace, {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": container["name"], "env": [{"name": variable["name"], "value": "EDITED"}]}]}}}})

    state, failed, report = drift_run(dagbag)
    assert (state, failed) == ("failed", ["a_task_failed", "check_chart_objects"])
    assert {f["component"] for f in report["findings"]} == {f"Deployment {spec.namespace}/{name}"}
    assert sorted((f["problem"], f["evidence"]) for f in report["findings"]) == sorted([
        ("spec.replicas differs from the release's manifest", "3 -> manifest 1"),
        (f"spec.template.spec.containers.{container['name']}.env.{variable['name']}.value differs from the "
         "release's manifest", f"'EDITED' -> manifest {variable['value']!r}"),
    ])
    assert all("force_upgrade=true" in f["fix"] for f in report["findings"])

    assert bootstrap(dagbag, environment) == "success"  # values match: helm is skipped, the edit stays
    assert drift_run(dagbag)[1] == ["a_task_failed", "check_chart_objects"]
    assert bootstrap(dagbag, environment, force_upgrade=True) == "success"
    state, failed, report = drift_run(dagbag)
    assert (state, failed, report["findings"]) == ("success", [], [])
    assert objects.get("Deployment", name, spec.namespace)["spec"]["replicas"] == 1


def remove_role_annotation(spec: EnvironmentSpec, objects: ClusterObjects) -> tuple[str, str]:
    """Remove the first agent ServiceAccount's role annotation; its name and the ARN it had."""
    name = naming.agent_workloads(spec)[0].service_account
    arn = objects.get("ServiceAccount", name, spec.namespace)["metadata"]["annotations"][ROLE_ARN_ANNOTATION]
    objects.patch("ServiceAccount", name, spec.namespace, {"metadata": {"annotations": {ROLE_ARN_ANNOTATION: None}}})
    return name, arn


def test_removed_role_annotation_is_a_service_account_finding(environment: Sandbox, dagbag: Any) -> None:
    spec = environment.spec
    objects = cluster(environment)
    name, arn = remove_role_annotation(spec, objects)
    try:
        state, failed, report = drift_run(dagbag)
    finally:
        objects.patch("ServiceAccount", name, spec.namespace, {"metadata": {"annotations": {ROLE_ARN_ANNOTATION: arn}}})

    assert (state, failed) == ("failed", ["a_task_failed", "check_service_accounts"])
    finding = only_finding(report)
    assert finding["component"] == f"ServiceAccount {spec.namespace}/{name}"
    assert finding["problem"] == "the IRSA role annotation was removed"
    assert arn in finding["evidence"] and "remote_agents_bootstrap" in finding["fix"]


def test_bootstrap_puts_back_a_removed_role_annotation(environment: Sandbox, dagbag: Any) -> None:
    spec = environment.spec
    objects = cluster(environment)
    name, arn = remove_role_annotation(spec, objects)

    assert bootstrap(dagbag, environment) == "success"

    assert objects.get("ServiceAccount", name, spec.namespace)["metadata"]["annotations"][ROLE_ARN_ANNOTATION] == arn
    assert drift_run(dagbag)[:2] == ("success", [])


def test_narrower_permission_policy_is_an_irsa_finding(environment: Sandbox, dagbag: Any) -> None:
    iam = environment.aws.admin_client("iam")
    role = naming.irsa_role_names(environment.spec)[None]
    document = iam.get_role_policy(RoleName=role, PolicyName=naming.IRSA_POLICY_NAME)["PolicyDocument"]
    narrower = {**document, "Statement": [s for s in document["Statement"] if s.get("Sid") != "ReadSecrets"]}
    iam.put_role_policy(RoleName=role, PolicyName=naming.IRSA_POLICY_NAME, PolicyDocument=json.dumps(narrower))
    try:
        state, failed, report = drift_run(dagbag)
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=naming.IRSA_POLICY_NAME, PolicyDocument=json.dumps(document))

    assert (state, failed) == ("failed", ["a_task_failed", "check_irsa_roles"])
    finding = only_finding(report)
    assert finding["component"] == f"IAM role {role}"
    assert finding["problem"] == f"permission policy {naming.IRSA_POLICY_NAME} differs from the spec"
    assert finding["evidence"].startswith("missing from IAM: ReadSecrets")
    assert "in IAM, not in the spec" not in finding["evidence"]


def test_deleted_registry_secret_is_a_secrets_finding(environment: Sandbox, dagbag: Any) -> None:
    spec = environment.spec
    objects = cluster(environment)
    secret = objects.get("Secret", spec.astro.registry_secret_name, spec.namespace)
    assert objects.delete("Secret", spec.astro.registry_secret_name, spec.namespace)
    try:
        state, failed, report = drift_run(dagbag)
    finally:
        # Put the same token back (the bootstrap would mint a new one; one bootstrap repair is tested above).
        meta = secret["metadata"]
        objects.create({"apiVersion": "v1", "kind": "Secret", "type": secret["type"], "data": secret["data"],
                        "metadata": {key: meta[key] for key in ("name", "namespace", "labels", "annotations")}})

    assert (state, failed) == ("failed", ["a_task_failed", "check_secrets"])
    finding = only_finding(report)
    assert finding["component"] == f"registry pull Secret {spec.namespace}/{spec.astro.registry_secret_name}"
    assert finding["problem"] == "missing"


def test_hand_changes_to_cluster_oidc_namespace_and_astro_are_one_finding_each(environment: Sandbox, dagbag: Any) -> None:
    spec = environment.spec
    assert spec.eks is not None
    eks = environment.aws.admin_client("eks", region_name=spec.eks.region)
    iam = environment.aws.admin_client("iam")
    group = spec.eks.node_groups[0]
    issuer = eks.describe_cluster(name=spec.eks.name)["cluster"]["identity"]["oidc"]["issuer"]
    provider_arn = next(p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
                        if p["Arn"].endswith(issuer.removeprefix("https://")))
    thumbprints = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)["ThumbprintList"]
    astro = AstroHook(spec.astro.connection_id, spec.astro.organization_id)
    ranges = list(environment.astro.deployment(spec.astro.deployment_id).allowed_ip_address_ranges)
    egress = next(r for r in ranges if r not in (spec.astro.allowed_ip_ranges or []))
    objects = cluster(environment)

    eks.update_nodegroup_config(clusterName=spec.eks.name, nodegroupName=group.name,
                                scalingConfig={"minSize": group.min_size, "maxSize": group.max_size + 1,
                                               "desiredSize": group.desired_size})
    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn, ThumbprintList=["0" * 40])
    objects.patch("Namespace", spec.namespace, None, {"metadata": {"labels": {naming.ENVIRONMENT_LABEL: None}}})
    astro.update_remote_execution(spec.astro.deployment_id, allowed_ip_address_ranges=[r for r in ranges if r != egress])
    try:
        state, failed, report = drift_run(dagbag)
    finally:
        eks.update_nodegroup_config(clusterName=spec.eks.name, nodegroupName=group.name,
                                    scalingConfig={"minSize": group.min_size, "maxSize": group.max_size,
                                                   "desiredSize": group.desired_size})
        iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn, ThumbprintList=thumbprints)
        objects.patch("Namespace", spec.namespace, None, {"metadata": {"labels": {naming.ENVIRONMENT_LABEL: spec.name}}})
        astro.update_remote_execution(spec.astro.deployment_id, allowed_ip_address_ranges=ranges)

    assert (state, failed) == ("failed", ["a_task_failed", "check_cluster", "check_namespace", "check_oidc_provider",
                                          "check_remote_execution"])
    found = {f["area"]: (f["component"], f["problem"], f["evidence"]) for f in report["findings"]}
    assert len(report["findings"]) == len(found) == 4
    assert found["cluster"] == (f"EKS node group {spec.eks.name}/{group.name}",
                                "scalingConfig.maxSize differs from the spec", f"{group.max_size + 1} -> spec {group.max_size}")
    assert found["oidc_provider"][1] == "has other thumbprints than the bootstrap sets"
    assert found["namespace"] == (f"Namespace {spec.namespace}", f"label {naming.ENVIRONMENT_LABEL} differs from the spec",
                                  f"(unset) -> spec {spec.name!r}")
    assert found["remote_execution"] == (f"Astro Deployment {spec.astro.deployment_id}", f"does not allow {egress}",
                                         f"allowed IP ranges: {', '.join(sorted(set(ranges) - {egress}))}")
    assert drift_run(dagbag)[:2] == ("success", [])
