"""The drift comparisons: live state (as the drift Dag reads it) against what the spec renders. No I/O."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from remote_agents import naming
from remote_agents.changes import REDACTED
from remote_agents.health import drift
from remote_agents.health.diagnose import DRIFT
from remote_agents.health.drift import ReleaseState, RoleState, SecretState, ServiceAccountState
from remote_agents.render.policies import build_irsa_policies, build_role_arns
from remote_agents.render.values import ROLE_ARN_ANNOTATION, build_values
from remote_agents.spec import EnvironmentSpec, load_spec

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "include" / "environments"
ACCOUNT = "123456789012"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


@pytest.fixture(scope="module")
def spec() -> EnvironmentSpec:
    return load_spec(ENVIRONMENTS / "sandbox.yaml")


@pytest.fixture(scope="module")
def values(spec: EnvironmentSpec) -> dict[str, Any]:
    return build_values(spec, role_arns=build_role_arns(spec, ACCOUNT),
                        deployment_api_url="https://sandbox-cluster.external.astronomer.run/sandbox-deployment")


def release(spec: EnvironmentSpec, values: dict[str, Any], chart_version: str | None = None) -> ReleaseState:
    return ReleaseState(spec.release_name, spec.namespace, chart_version or spec.chart.version, values)


def set_env(values: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    changed = copy.deepcopy(values)
    changed["commonEnv"] = [e for e in changed["commonEnv"] if e["name"] != name] + [{"name": name, "value": value}]
    return changed


# -- release -----------------------------------------------------------------------------------


def test_release_with_the_rendered_values_and_chart_has_no_drift(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    assert drift.compare_release(release(spec, copy.deepcopy(values)), values, spec.chart.version) == []


def test_missing_release_is_one_not_installed_finding(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    (finding,) = drift.compare_release(ReleaseState(spec.release_name, spec.namespace, None), values, "2.3.3")

    assert (finding.check, finding.problem) == (DRIFT, "not installed")


def test_other_chart_version_is_reported_with_both_versions(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    (finding,) = drift.compare_release(release(spec, values, "2.2.0"), values, "2.3.3")

    assert finding.problem == "chart 2.2.0 is installed, the spec says 2.3.3"


def test_changed_env_var_is_named_by_its_variable(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    live = set_env(values, "AIRFLOW__LOGGING__REMOTE_LOGGING", "False")

    (finding,) = drift.compare_release(release(spec, live), values, spec.chart.version)

    assert finding.component == f"Helm release {spec.namespace}/{spec.release_name}"
    assert finding.problem == "value commonEnv.AIRFLOW__LOGGING__REMOTE_LOGGING.value differs from the rendered values"
    assert finding.evidence == "'False' -> spec 'True'"


def test_changed_worker_replicas_is_named_by_the_worker(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    live = copy.deepcopy(values)
    live["workers"][1]["replicas"] = 5

    assert drift.values_diff(live, values) == {"workers.heavy.replicas": {"from": 5, "to": 1}}


@pytest.mark.parametrize("key, value", [("agentToken", "tok-abc"), ("imagePullSecretData", "e30=")])
def test_inline_secret_values_are_redacted(spec: EnvironmentSpec, values: dict[str, Any], key: str, value: str) -> None:
    live = {**values, key: value}

    (finding,) = drift.compare_release(release(spec, live), values, spec.chart.version)

    assert value not in finding.message
    assert finding.problem == f"value {key} differs from the rendered values"
    assert finding.evidence == f"{REDACTED} -> spec (unset)"


def test_secret_looking_env_var_is_redacted(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    live = set_env(values, "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")

    (finding,) = drift.compare_release(release(spec, live), values, spec.chart.version)

    assert "wJalrXUtnFEMI" not in finding.message and REDACTED in finding.evidence


def test_each_differing_value_is_its_own_finding(spec: EnvironmentSpec, values: dict[str, Any]) -> None:
    live = set_env({**values, **{f"extra{i}": i for i in range(12)}}, "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    live["workers"][1]["replicas"] = 5

    findings = drift.compare_release(release(spec, live), values, spec.chart.version)

    problems = {f.problem.removeprefix("value ").removesuffix(" differs from the rendered values"): f.evidence
                for f in findings}
    assert len(findings) == len(problems) == 14
    assert problems["extra11"] == "11 -> spec (unset)"
    assert problems["workers.heavy.replicas"] == "5 -> spec 1"
    assert problems["commonEnv.AWS_SECRET_ACCESS_KEY"] == f"{REDACTED} -> spec (unset)"
    assert all("wJalrXUtnFEMI" not in f.message for f in findings)


# -- chart objects -------------------------------------------------------------------------------


RENDERED = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "agent-worker-default", "labels": {"app": "worker"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "worker"}}, "template": {
        "metadata": {"labels": {"app": "worker"}},
        "spec": {"serviceAccountName": "agent-worker", "containers": [{
            "name": "worker", "image": "agent:1.0", "ports": [{"containerPort": 8080}],
            "env": [{"name": "QUEUE", "value": "default"}, {"name": "DB_PASSWORD", "value": "s3cr3t-rendered"}],
        }]},
    }},
}


def live_object(**edits: Any) -> dict[str, Any]:
    """RENDERED as the API server returns it: defaults, status and tool metadata added."""
    live = copy.deepcopy(RENDERED)
    live["metadata"].update(namespace="astro-agents", uid="u-1", resourceVersion="42", generation=3,
                            creationTimestamp="2026-01-01T00:00:00Z", managedFields=[{"manager": "helm"}],
                            annotations={"deployment.kubernetes.io/revision": "3",
                                         "meta.helm.sh/release-name": "agent"})
    live["spec"].update(strategy={"type": "RollingUpdate"}, revisionHistoryLimit=10)
    live["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "2026-01-02"}
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    container["ports"][0]["protocol"] = "TCP"
    live["status"] = {"readyReplicas": 1}
    for path, value in edits.items():
        *parents, leaf = path.split("__")
        node: Any = live
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[leaf] = value
    return live


def chart_object(live: dict[str, Any] | None) -> drift.ChartObjectState:
    return drift.ChartObjectState("Deployment", "agent-worker-default", "astro-agents", RENDERED, live)


def test_live_object_with_server_defaults_and_tool_metadata_has_no_drift() -> None:
    assert drift.compare_chart_objects([chart_object(live_object())]) == []


def test_scaled_deployment_is_one_finding_naming_the_field() -> None:
    (finding,) = drift.compare_chart_objects([chart_object(live_object(spec__replicas=3))])

    assert finding.component == "Deployment astro-agents/agent-worker-default"
    assert finding.problem == "spec.replicas differs from the release's manifest"
    assert finding.evidence == "3 -> manifest 1"
    assert "force_upgrade=true" in finding.fix


def test_each_edited_field_is_its_own_finding_and_env_vars_are_named() -> None:
    live = live_object(spec__replicas=0)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "agent:evil"
    container["env"] = [{"name": "QUEUE", "value": "other"}, {"name": "DB_PASSWORD", "value": "s3cr3t-live"}]

    findings = drift.compare_chart_objects([chart_object(live)])

    assert {f.problem.removesuffix(" differs from the release's manifest"): f.evidence for f in findings} == {
        "spec.replicas": "0 -> manifest 1",
        "spec.template.spec.containers.worker.image": "'agent:evil' -> manifest 'agent:1.0'",
        "spec.template.spec.containers.worker.env.QUEUE.value": "'other' -> manifest 'default'",
        "spec.template.spec.containers.worker.env.DB_PASSWORD.value": f"{REDACTED} -> manifest {REDACTED}",
    }
    assert all("s3cr3t" not in f.message for f in findings)


def test_removed_env_var_and_label_are_findings() -> None:
    live = live_object()
    live["metadata"]["labels"] = {}
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "DB_PASSWORD", "value": "s3cr3t-rendered"}]

    findings = drift.compare_chart_objects([chart_object(live)])

    assert sorted(f.problem for f in findings) == [
        "metadata.labels.app differs from the release's manifest",
        "spec.template.spec.containers.worker.env.QUEUE.value differs from the release's manifest",
    ]
    assert {f.evidence for f in findings} == {"(unset) -> manifest 'worker'", "(unset) -> manifest 'default'"}


def test_service_account_role_annotation_is_left_to_the_service_accounts_area() -> None:
    rendered = {"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "agent-worker", "labels": {"app": "worker"},
                             "annotations": {ROLE_ARN_ANNOTATION: "arn:aws:iam::1:role/a"}}}
    live = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent-worker", "labels": {}}}

    (finding,) = drift.compare_chart_objects([drift.ChartObjectState("ServiceAccount", "agent-worker",
                                                                     "astro-agents", rendered, live)])

    assert finding.problem == "metadata.labels.app differs from the release's manifest"


def test_missing_chart_object_is_a_finding() -> None:
    (finding,) = drift.compare_chart_objects([chart_object(None)])

    assert (finding.problem, finding.evidence) == ("missing", "in the release's manifest, not in the cluster")


# -- ServiceAccounts -----------------------------------------------------------------------------


def accounts(spec: EnvironmentSpec, arn: str | None) -> list[ServiceAccountState]:
    return [ServiceAccountState(w.service_account, spec.namespace, True, arn)
            for w in naming.agent_workloads(spec, include_sentinel=False)]


def test_annotated_service_accounts_have_no_drift(spec: EnvironmentSpec) -> None:
    role_arns = build_role_arns(spec, ACCOUNT)
    desired = drift.desired_role_annotations(spec, role_arns)

    assert drift.compare_service_accounts(accounts(spec, role_arns[None]), desired) == []


def test_removed_role_annotation_names_the_account_and_the_expected_role(spec: EnvironmentSpec) -> None:
    role_arns = build_role_arns(spec, ACCOUNT)
    live = accounts(spec, role_arns[None])
    live[0] = ServiceAccountState(live[0].name, spec.namespace, True, None)

    (finding,) = drift.compare_service_accounts(live, drift.desired_role_annotations(spec, role_arns))

    assert finding.component == f"ServiceAccount {spec.namespace}/{live[0].name}"
    assert finding.problem == "the IRSA role annotation was removed"
    assert role_arns[None] in finding.evidence and "upgrades the release" in finding.fix


def test_other_role_on_one_account_is_one_finding(spec: EnvironmentSpec) -> None:
    role_arns = build_role_arns(spec, ACCOUNT)
    live = accounts(spec, role_arns[None])
    live[-1] = ServiceAccountState(live[-1].name, spec.namespace, True, f"arn:aws:iam::{ACCOUNT}:role/admin")

    (finding,) = drift.compare_service_accounts(live, drift.desired_role_annotations(spec, role_arns))

    assert finding.problem == "annotated with another IAM role" and "role/admin" in finding.evidence


def test_missing_service_account_is_reported(spec: EnvironmentSpec) -> None:
    role_arns = build_role_arns(spec, ACCOUNT)
    live = accounts(spec, role_arns[None])
    live[1] = ServiceAccountState(live[1].name, spec.namespace, False)

    (finding,) = drift.compare_service_accounts(live, drift.desired_role_annotations(spec, role_arns))

    assert finding.problem == "missing"


def test_per_component_roles_go_to_their_component_accounts() -> None:
    spec = load_spec(ENVIRONMENTS / "multi-queue.yaml")
    role_arns = build_role_arns(spec, ACCOUNT)

    desired = drift.desired_role_annotations(spec, role_arns)

    assert desired["agents-worker-etl"] == role_arns[naming.WORKER]
    assert desired["agents-triggerer"] == role_arns[naming.TRIGGERER]


def test_role_annotation_without_irsa_is_drift() -> None:
    spec = load_spec(ENVIRONMENTS / "onprem.yaml")
    live = accounts(spec, f"arn:aws:iam::{ACCOUNT}:role/leftover")

    findings = drift.compare_service_accounts(live, drift.desired_role_annotations(spec, None))

    assert {f.problem for f in findings} == {"annotated with an IAM role the spec does not give"}


# -- IRSA roles ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def desired_roles(spec: EnvironmentSpec) -> dict[str | None, dict[str, Any]]:
    return build_irsa_policies(spec, ISSUER, ACCOUNT)


def live_role(desired_roles: dict[str | None, dict[str, Any]], **changes: Any) -> RoleState:
    role = desired_roles[None]
    fields: dict[str, Any] = {"trust_policy": role["trust_policy"],
                              "inline_policies": {role["policy_name"]: role["permission_policy"]}, **changes}
    return RoleState(role["role_name"], True, **fields)


def test_role_as_iam_returns_it_reordered_and_url_encoded_has_no_drift(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    role = desired_roles[None]
    permission = copy.deepcopy(role["permission_policy"])
    permission["Statement"].reverse()
    encoded = quote(json.dumps(permission))

    live = live_role(desired_roles, inline_policies={role["policy_name"]: encoded})

    assert drift.compare_roles([live], desired_roles) == []


def test_narrower_permission_policy_lists_the_missing_statement(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    role = desired_roles[None]
    narrower = {**role["permission_policy"],
                "Statement": [s for s in role["permission_policy"]["Statement"] if s["Sid"] != "ReadSecrets"]}

    (finding,) = drift.compare_roles([live_role(desired_roles, inline_policies={role["policy_name"]: narrower})],
                                     desired_roles)

    assert finding.problem == f"permission policy {naming.IRSA_POLICY_NAME} differs from the spec"
    assert finding.evidence.startswith("missing from IAM: ReadSecrets [")
    assert "in IAM, not in the spec" not in finding.evidence


def test_widened_trust_shows_the_extra_and_the_missing_statement(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    trust = copy.deepcopy(desired_roles[None]["trust_policy"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    sub = next(key for key in condition if key.endswith(":sub"))
    condition[sub] = "system:serviceaccount:astro-agents:*"

    (finding,) = drift.compare_roles([live_role(desired_roles, trust_policy=trust)], desired_roles)

    assert finding.problem == "trust policy differs from the spec"
    assert "missing from IAM" in finding.evidence and "system:serviceaccount:astro-agents:*" in finding.evidence


def test_missing_role_is_one_finding(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    (finding,) = drift.compare_roles([RoleState(desired_roles[None]["role_name"], exists=False)], desired_roles)

    assert finding.problem == "missing"


def test_missing_permission_policy_is_reported(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    (finding,) = drift.compare_roles([live_role(desired_roles, inline_policies={})], desired_roles)

    assert finding.problem == f"permission policy {naming.IRSA_POLICY_NAME} is missing"


def test_extra_inline_and_managed_policies_are_reported(desired_roles: dict[str | None, dict[str, Any]]) -> None:
    role = desired_roles[None]
    live = live_role(desired_roles, inline_policies={role["policy_name"]: role["permission_policy"], "debug": {}},
                     attached_policy_arns=("arn:aws:iam::aws:policy/AdministratorAccess",))

    (finding,) = drift.compare_roles([live], desired_roles)

    assert finding.problem == "has policies the spec does not give"
    assert finding.evidence == "also attached: debug, arn:aws:iam::aws:policy/AdministratorAccess"


# -- Secrets -------------------------------------------------------------------------------------


def secret(**changes: Any) -> SecretState:
    fields: dict[str, Any] = {"name": "astro-registry", "namespace": "astro-agents", "purpose": "registry pull",
                              "exists": True, "expected_keys": (".dockerconfigjson",),
                              "present_keys": (".dockerconfigjson",), "tracks_token": True, "token_id": "tok-1",
                              "token_live": True, **changes}
    return SecretState(**fields)


def test_present_secret_with_a_live_token_has_no_drift() -> None:
    assert drift.compare_secrets([secret()]) == []


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"exists": False, "present_keys": ()}, "missing"),
        ({"present_keys": ()}, "has no key .dockerconfigjson"),
        ({"token_id": None, "token_live": None}, "holds a token the bootstrap did not record"),
        ({"token_live": False}, "token tok-1 is revoked or expired in Astro"),
        ({"token_live": None, "api_error": "HTTP 503"}, "could not ask Astro about token tok-1"),
    ],
)
def test_each_secret_problem_is_one_finding(changes: dict[str, Any], problem: str) -> None:
    (finding,) = drift.compare_secrets([secret(**changes)])

    assert finding.component == "registry pull Secret astro-agents/astro-registry"
    assert finding.problem == problem


def test_untracked_credentials_secret_needs_only_its_keys() -> None:
    credentials = secret(name="creds", purpose="AWS credentials", expected_keys=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                         present_keys=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), tracks_token=False,
                         token_id=None, token_live=None)

    assert drift.compare_secrets([credentials]) == []


# -- cluster, OIDC provider, namespace, Remote Execution settings -------------------------------


def live_cluster(spec: EnvironmentSpec, version: str | None = None, **group_changes: Any) -> tuple[drift.ClusterState, list[dict[str, Any]]]:
    """The cluster as the bootstrap made it (``group_changes`` edit its first node group) and the requests."""
    from remote_agents.render.cluster import build_eks_cluster_inputs

    assert spec.eks is not None
    requests = build_eks_cluster_inputs(spec)["nodegroup_requests"]
    groups = tuple(drift.NodegroupState(**{
        "name": r["nodegroupName"], "status": "ACTIVE", "scaling": {**r["scalingConfig"], "desiredSize": 7},
        "instance_types": tuple(r["instanceTypes"]), "ami_type": r["amiType"], "disk_size": r["diskSize"],
        "labels": {**r["labels"], "added-by": "someone"}, "tags": r["tags"], **(group_changes if i == 0 else {}),
    }) for i, r in enumerate(requests))
    return drift.ClusterState(spec.eks.name, version or spec.eks.kubernetes_version, "ACTIVE", groups), requests


def compare_cluster(spec: EnvironmentSpec, live: drift.ClusterState, requests: list[dict[str, Any]]) -> list[Any]:
    assert spec.eks is not None
    return drift.compare_cluster(live, spec.eks.kubernetes_version, requests, naming.ownership_tags(spec))


def test_cluster_as_bootstrapped_has_no_drift_whatever_the_autoscaler_made_of_desired_size(spec: EnvironmentSpec) -> None:
    assert compare_cluster(spec, *live_cluster(spec)) == []


def test_cluster_on_another_kubernetes_version_is_a_finding_whose_fix_is_a_deliberate_upgrade(spec: EnvironmentSpec) -> None:
    (finding,) = compare_cluster(spec, *live_cluster(spec, version="1.32"))

    assert finding.problem == "runs Kubernetes 1.32, the spec says 1.33"
    assert "aws eks update-cluster-version --name remote-agents-sandbox --kubernetes-version 1.33" in finding.fix


def test_each_node_group_field_that_differs_is_its_own_finding(spec: EnvironmentSpec) -> None:
    live, requests = live_cluster(spec, instance_types=("m5.2xlarge",), scaling={"minSize": 0, "maxSize": 2},
                                  status="DEGRADED")
    findings = compare_cluster(spec, live, requests)

    assert [(f.component, f.problem, f.evidence) for f in findings] == [
        ("EKS node group remote-agents-sandbox/workers", "scalingConfig.minSize differs from the spec", "0 -> spec 1"),
        ("EKS node group remote-agents-sandbox/workers", "instanceTypes differs from the spec",
         '["m5.2xlarge"] -> spec ["m5.large"]'),
        ("EKS node group remote-agents-sandbox/workers", "is DEGRADED, not ACTIVE", "describe_nodegroup health"),
    ]
    assert "update-nodegroup-config" in findings[0].fix and "cannot change it in place" in findings[1].fix


def test_missing_cluster_and_missing_node_group_are_findings_a_bootstrap_repairs(spec: EnvironmentSpec) -> None:
    live, requests = live_cluster(spec)
    (gone,) = compare_cluster(spec, drift.ClusterState(live.name, None), requests)
    (no_group,) = compare_cluster(spec, drift.ClusterState(live.name, live.version, "ACTIVE"), requests)

    assert (gone.component, gone.problem) == ("EKS cluster remote-agents-sandbox", "missing")
    assert (no_group.component, no_group.problem) == ("EKS node group remote-agents-sandbox/workers", "missing")
    assert drift.BOOTSTRAP in gone.fix and drift.BOOTSTRAP in no_group.fix


def test_a_node_group_of_ours_the_spec_dropped_is_a_finding_and_someone_elses_is_not(spec: EnvironmentSpec) -> None:
    live, requests = live_cluster(spec)
    ours = dataclasses.replace(live.nodegroups[0], name="old-workers")
    theirs = dataclasses.replace(live.nodegroups[0], name="system", tags={"team": "platform"})
    (finding,) = compare_cluster(spec, dataclasses.replace(live, nodegroups=(*live.nodegroups, ours, theirs)), requests)

    assert (finding.component, finding.problem) == ("EKS node group remote-agents-sandbox/old-workers",
                                                    "is ours but no longer in the spec")


def test_oidc_provider_missing_or_without_the_sts_audience_is_a_finding() -> None:
    ok = drift.OidcProviderState(ISSUER, True, ("sts.amazonaws.com",), ("abc",))
    host = ISSUER.removeprefix("https://")

    assert drift.compare_oidc_provider(ok, ["sts.amazonaws.com"], ["abc"]) == []
    assert drift.compare_oidc_provider(drift.OidcProviderState(None, False), ["sts.amazonaws.com"], ["abc"]) == []
    (missing,) = drift.compare_oidc_provider(drift.OidcProviderState(ISSUER, False), ["sts.amazonaws.com"], ["abc"])
    (audience,) = drift.compare_oidc_provider(dataclasses.replace(ok, client_ids=()), ["sts.amazonaws.com"], ["abc"])
    assert (missing.component, missing.problem) == (f"IAM OIDC provider {host}", "missing")
    assert audience.problem == "does not accept the audience sts.amazonaws.com"


def test_namespace_label_taken_off_is_a_finding_and_labels_added_by_others_are_not(spec: EnvironmentSpec) -> None:
    from remote_agents.render.manifests import build_namespace

    wanted = build_namespace(spec)["metadata"]["labels"]
    extra = {**wanted, "istio-injection": "enabled"}
    without = {k: v for k, v in wanted.items() if k != naming.ENVIRONMENT_LABEL}

    assert drift.compare_namespace(drift.NamespaceState(spec.namespace, True, extra), wanted) == []
    (finding,) = drift.compare_namespace(drift.NamespaceState(spec.namespace, True, without), wanted)
    assert finding.evidence == "(unset) -> spec 'sandbox'" and "teardown finds our namespace" in finding.fix
    (gone,) = drift.compare_namespace(drift.NamespaceState(spec.namespace, False), wanted)
    assert gone.problem == "missing"


def test_remote_execution_settings_are_compared_only_where_the_spec_manages_them() -> None:
    live = drift.RemoteExecutionState("dep", True, ("10.0.0.1/32", "192.0.2.0/24"), "s3://logs/x", "p")
    logs = {"taskLogBucket": "s3://logs/x", "taskLogUrlPattern": "p"}

    assert drift.compare_remote_execution(live, None, None) == []
    assert drift.compare_remote_execution(live, ["192.0.2.0/24"], logs) == []
    (ranges,) = drift.compare_remote_execution(live, ["192.0.2.0/24", "203.0.113.9/32"], None)
    assert ranges.problem == "does not allow 203.0.113.9/32"
    (bucket,) = drift.compare_remote_execution(dataclasses.replace(live, task_log_bucket=None), None, logs)
    assert bucket.problem == "remoteExecution.taskLogBucket differs from the spec"
    (off,) = drift.compare_remote_execution(dataclasses.replace(live, enabled=False), ["192.0.2.0/24"], logs)
    assert off.problem == "does not have Remote Execution enabled"


def test_areas_follow_the_spec_kind_and_identity() -> None:
    onprem = load_spec(ENVIRONMENTS / "onprem.yaml")
    sandbox = load_spec(ENVIRONMENTS / "sandbox.yaml")

    assert drift.areas_for(sandbox) == list(drift.AREAS)
    assert drift.areas_for(onprem) == [a for a in drift.AREAS if a not in (drift.CLUSTER, drift.OIDC_PROVIDER, drift.IRSA_ROLES)]


@pytest.mark.parametrize(("rendered", "live"), [("0.5", "500m"), ("1024Mi", "1Gi"), (1, "1"), ("2000m", "2"),
                                                ("1e3", "1k")])
def test_a_quantity_the_api_server_rewrote_in_canonical_form_is_not_drift(rendered: Any, live: Any) -> None:
    manifest = {"spec": {"containers": [{"name": "worker", "resources": {"limits": {"cpu": rendered}}}]}}
    current = {"spec": {"containers": [{"name": "worker", "resources": {"limits": {"cpu": live}}}]}}

    assert drift.manifest_diff(current, manifest) == {}


def test_a_changed_quantity_is_drift_and_a_quantity_like_string_elsewhere_is_compared_as_text() -> None:
    manifest = {"spec": {"containers": [{"name": "worker", "resources": {"requests": {"memory": "2Gi"}}}]},
                "metadata": {"labels": {"size": "1Gi"}}}
    current = {"spec": {"containers": [{"name": "worker", "resources": {"requests": {"memory": "1Gi"}}}]},
               "metadata": {"labels": {"size": "1024Mi"}}}

    assert drift.manifest_diff(current, manifest) == {
        "spec.containers.worker.resources.requests.memory": {"from": "1Gi", "to": "2Gi"},
        "metadata.labels.size": {"from": "1024Mi", "to": "1Gi"},
    }
