"""EnsureEksClusterOperator against the sandbox's moto, through the amazon provider's hooks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from moto.eks.models import eks_backends

from remote_agents.errors import AwsError, ClusterError
from remote_agents.operators.cluster import EnsureEksClusterOperator, WaitForEksNodegroupsOperator
from remote_agents.render.cluster import build_eks_cluster_inputs
from remote_agents.triggers.cluster import EksClusterStateTrigger
from remote_agents.triggers.eks_progress import cluster_progress
from sandbox.environment import Sandbox

READ_ONLY = ("Describe", "List", "Get")



@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.aws.set_eks_delays(cluster_seconds=0, nodegroup_seconds=0)


def ensure_op(sandbox: Sandbox, **overrides: Any) -> EnsureEksClusterOperator:
    inputs = {**build_eks_cluster_inputs(sandbox.spec), "deferrable": False, "poll_interval": 0.2, "max_attempts": 50}
    return EnsureEksClusterOperator(task_id="eks_cluster", **{**inputs, **overrides})


def record_mutations(op: EnsureEksClusterOperator) -> list[str]:
    """Mutating calls made through the operator's own clients (botocore before-call events)."""
    calls: list[str] = []
    for hook in (op.eks_hook, op.iam_hook, op.vpc_hook):
        hook.conn.meta.events.register(
            "before-call", lambda model, **_: None if model.name.startswith(READ_ONLY) else calls.append(model.name)
        )
    return calls


def actions(result: dict[str, Any]) -> dict[str, str]:
    return {change["resource"]: change["action"] for change in result["changes"]}


def test_first_run_creates_roles_vpc_cluster_and_nodegroup(clean: Sandbox) -> None:
    result = ensure_op(clean).execute({})

    assert set(actions(result).values()) == {"created"}
    eks = clean.aws.admin_client("eks")
    cluster = eks.describe_cluster(name="remote-agents-sandbox")["cluster"]
    assert (cluster["status"], cluster["version"]) == ("ACTIVE", "1.33")
    assert eks.describe_nodegroup(clusterName="remote-agents-sandbox", nodegroupName="workers")["nodegroup"]["status"] == "ACTIVE"
    iam = clean.aws.admin_client("iam")
    attached = {p["PolicyName"] for p in iam.list_attached_role_policies(RoleName="sandbox-eks-node")["AttachedPolicies"]}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"}
    subnets = clean.aws.admin_client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [result["vpc_id"]]}])["Subnets"]
    assert {s["AvailabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"} and len(subnets) == 4


def test_result_holds_only_non_secret_facts(clean: Sandbox) -> None:
    result = ensure_op(clean).execute({})

    assert result["endpoint"] == clean.kube.url
    assert result["oidc_issuer"].startswith("https://oidc.eks.us-east-1.amazonaws.com/id/")
    assert result["cluster_role_arn"].endswith(":role/sandbox-eks-cluster")
    assert "certificateAuthority" not in json.dumps(result) and clean.aws.admin_credentials.secret_access_key not in json.dumps(result)


def test_second_run_makes_no_mutating_calls_and_reports_unchanged(clean: Sandbox) -> None:
    ensure_op(clean).execute({})
    clean.aws.request_log.clear()
    op = ensure_op(clean)
    mutations = record_mutations(op)

    result = op.execute({})

    assert mutations == []
    assert clean.aws.request_log.mutating_calls == []
    assert set(actions(result).values()) == {"unchanged"}


def test_version_drift_is_reported_and_not_applied(clean: Sandbox) -> None:
    ensure_op(clean).execute({})
    inputs = build_eks_cluster_inputs(clean.spec)
    clean.aws.request_log.clear()

    result = ensure_op(clean, cluster_request={**inputs["cluster_request"], "version": "1.34"}).execute({})

    change = next(c for c in result["changes"] if c["resource"] == "eks:cluster/remote-agents-sandbox")
    assert change["action"] == "drifted"
    assert change["diff"] == {"version": {"from": "1.33", "to": "1.34"}}
    assert clean.aws.request_log.mutating_calls == []
    assert clean.aws.admin_client("eks").describe_cluster(name="remote-agents-sandbox")["cluster"]["version"] == "1.33"


def test_dry_run_changes_nothing_and_returns_the_plan(clean: Sandbox) -> None:
    result = ensure_op(clean, dry_run=True).execute({})

    assert clean.aws.request_log.mutating_calls == []
    assert actions(result)["eks:cluster/remote-agents-sandbox"] == "create"
    assert actions(result)["ec2:nat-gateway/remote-agents-sandbox"] == "create"
    assert actions(result)["eks:nodegroup/remote-agents-sandbox/workers"] == "create"
    assert clean.aws.admin_client("eks").list_clusters()["clusters"] == []


def test_rerun_after_failed_cluster_creation_converges_without_duplicates(clean: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    # Throttle CreateCluster past what the no-retry connection attempts: roles and VPC exist, no cluster.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NO_RETRY", json.dumps(
        {**json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"]), "extra": {
            **json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])["extra"],
            "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1}},
        }}
    ))
    clean.aws.throttle("eks", "CreateCluster", count=1)
    with pytest.raises(AwsError, match="eks:CreateCluster"):
        ensure_op(clean, aws_conn_id="aws_no_retry").execute({})
    assert clean.aws.admin_client("eks").list_clusters()["clusters"] == []

    result = ensure_op(clean).execute({})

    assert actions(result)["eks:cluster/remote-agents-sandbox"] == "created"
    assert actions(result)["iam:role/sandbox-eks-cluster"] == "unchanged"
    assert actions(result)["ec2:vpc/remote-agents-sandbox"] == "unchanged"
    ec2 = clean.aws.admin_client("ec2")
    ours = [{"Name": "tag:remote-agents:environment", "Values": ["sandbox"]}]
    assert len(ec2.describe_vpcs(Filters=ours)["Vpcs"]) == 1
    assert len(ec2.describe_subnets(Filters=ours)["Subnets"]) == 4
    assert len(ec2.describe_nat_gateways(Filter=ours)["NatGateways"]) == 1


def test_defers_while_the_cluster_is_creating_with_the_right_trigger(clean: Sandbox) -> None:
    clean.aws.set_eks_delays(cluster_seconds=3)
    op = ensure_op(clean, deferrable=True, poll_interval=0.5)

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, EksClusterStateTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert (kwargs["cluster_name"], kwargs["nodegroup_names"], kwargs["target"]) == ("remote-agents-sandbox", [], "active")
    assert (kwargs["aws_conn_id"], kwargs["region_name"], kwargs["poll_interval"]) == ("aws_default", "us-east-1", 0.5)
    assert kwargs["result"]["stage"] == "cluster"


def test_trigger_survives_a_serialize_round_trip() -> None:
    trigger = EksClusterStateTrigger("c", ["ng"], "deleted", False, "aws_x", "eu-west-1", 2.0, 7, {"changes": [], "facts": {}})
    classpath, kwargs = trigger.serialize()

    assert classpath == "remote_agents.triggers.cluster.EksClusterStateTrigger"
    assert EksClusterStateTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_deferred_run_resumes_after_the_trigger_fires_and_creates_the_nodegroup(clean: Sandbox) -> None:
    clean.aws.set_eks_delays(cluster_seconds=3)
    op = ensure_op(clean, deferrable=True, poll_interval=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})

    event = asyncio.run(_first_event(deferred.value.trigger))
    result = op.execute_complete({}, event.payload)

    assert event.payload["status"] == "success"
    assert actions(result)["eks:cluster/remote-agents-sandbox"] == "created"
    assert actions(result)["eks:nodegroup/remote-agents-sandbox/workers"] == "created"
    assert result["endpoint"] == clean.kube.url


def test_without_the_nodegroup_wait_it_returns_at_creation_and_the_wait_operator_defers_until_active(clean: Sandbox) -> None:
    clean.aws.set_eks_delays(cluster_seconds=0, nodegroup_seconds=2)
    eks = clean.aws.admin_client("eks")

    result = ensure_op(clean, wait_for_nodegroups=False).execute({})

    assert result["nodegroup_names"] == ["workers"]
    assert eks.describe_nodegroup(clusterName="remote-agents-sandbox", nodegroupName="workers")["nodegroup"]["status"] == "CREATING"
    wait = WaitForEksNodegroupsOperator(task_id="wait", cluster_name="remote-agents-sandbox",
                                        nodegroup_names=result["nodegroup_names"], poll_interval=0.5, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute({})
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["nodegroup_names"], kwargs["target"]) == (["workers"], "active")
    event = asyncio.run(_first_event(deferred.value.trigger))
    assert wait.execute_complete({}, event.payload) == {"changes": [], "nodegroups_active": ["workers"]}
    assert eks.describe_nodegroup(clusterName="remote-agents-sandbox", nodegroupName="workers")["nodegroup"]["status"] == "ACTIVE"


def test_the_nodegroup_wait_returns_at_once_without_names_or_in_a_dry_run(clean: Sandbox) -> None:
    for kwargs in ({"nodegroup_names": []}, {"nodegroup_names": ["workers"], "dry_run": True}):
        wait = WaitForEksNodegroupsOperator(task_id="wait", cluster_name="remote-agents-sandbox", **kwargs)
        assert wait.execute({})["changes"] == []
    assert clean.aws.request_log.mutating_calls == []


def test_create_if_missing_off_refuses_a_missing_cluster_and_creates_nothing(clean: Sandbox) -> None:
    op = ensure_op(clean, create_if_missing="False")
    mutations = record_mutations(op)

    with pytest.raises(ClusterError, match="remote-agents-sandbox does not exist; create_if_missing is off"):
        op.execute({})
    assert mutations == []


def test_create_if_missing_off_uses_an_existing_cluster_as_it_is(clean: Sandbox) -> None:
    ensure_op(clean).execute({})
    clean.aws.request_log.clear()
    op = ensure_op(clean, create_if_missing=False, nodegroup_requests=[{**build_eks_cluster_inputs(clean.spec)["nodegroup_requests"][0],
                                                                          "nodegroupName": "never-made"}])
    mutations = record_mutations(op)

    result = op.execute({})

    assert mutations == [] and clean.aws.request_log.mutating_calls == []
    assert actions(result) == {"eks:cluster/remote-agents-sandbox": "unchanged"}
    assert (result["endpoint"], result["nodegroup_names"]) == (clean.kube.url, [])


def test_execute_complete_raises_on_a_failed_event(clean: Sandbox) -> None:
    event = {"status": "error", "message": "EKS cluster c is FAILED: Ec2SubnetInvalidConfiguration: no IPs", "result": {}}

    with pytest.raises(ClusterError, match="Ec2SubnetInvalidConfiguration"):
        ensure_op(clean, deferrable=True).execute_complete({}, event)


def test_failed_cluster_is_reported_with_its_state(clean: Sandbox) -> None:
    ensure_op(clean).execute({})
    eks_backends[clean.aws.account_id]["us-east-1"].clusters["remote-agents-sandbox"].status = "FAILED"

    with pytest.raises(ClusterError, match="remote-agents-sandbox is FAILED"):
        ensure_op(clean).execute({})


def test_failed_cluster_message_lists_its_health_issues() -> None:
    cluster = {"status": "FAILED", "health": {"issues": [{"code": "Ec2SubnetInvalidConfiguration", "message": "subnet has no free IPs"}]}}

    state, message = cluster_progress("c", cluster, {}, "active")

    assert state == "failed"
    assert "Ec2SubnetInvalidConfiguration: subnet has no free IPs" in message


async def _first_event(trigger: EksClusterStateTrigger) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger yielded no event")
