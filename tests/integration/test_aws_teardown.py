"""Teardown operators: delete what the environment created, in order, and nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from remote_agents import naming
from remote_agents.errors import ClusterError
from remote_agents.operators.cluster import DeleteEksClusterOperator, EnsureEksClusterOperator
from remote_agents.operators.irsa import (
    DeleteIrsaRoleOperator,
    DeleteOidcProviderOperator,
    EnsureIrsaRoleOperator,
    EnsureOidcProviderOperator,
)
from remote_agents.render.cluster import build_eks_cluster_inputs
from remote_agents.render.policies import build_permission_policy
from remote_agents.triggers.vpc import NatGatewaysDeletedTrigger
from sandbox.environment import Sandbox

CLUSTER = "remote-agents-sandbox"
IRSA_ROLE = "sandbox-remote-agents"
EKS_ROLES = ["sandbox-eks-cluster", "sandbox-eks-node"]
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}



@pytest.fixture
def bootstrapped(sandbox: Sandbox) -> Iterator[dict[str, Any]]:
    """Cluster, OIDC provider and IRSA role as the bootstrap creates them."""
    sandbox.reset()
    cluster = EnsureEksClusterOperator(
        task_id="eks", deferrable=False, poll_interval=0.2, **build_eks_cluster_inputs(sandbox.spec)
    ).execute({})
    tags = naming.ownership_tags(sandbox.spec)
    oidc = EnsureOidcProviderOperator(task_id="oidc", oidc_issuer=cluster["oidc_issuer"], tags=tags).execute({})
    EnsureIrsaRoleOperator(
        task_id="irsa", role_name=IRSA_ROLE, oidc_issuer=cluster["oidc_issuer"],
        service_account_subjects=naming.service_account_subjects(sandbox.spec),
        permission_policy=build_permission_policy(sandbox.spec, sandbox.aws.account_id), tags=tags,
    ).execute({})
    sandbox.aws.request_log.clear()
    yield {"cluster": cluster, "oidc": oidc, "tags": tags}


@pytest.fixture
def slow_nat_deletion(sandbox: Sandbox) -> Iterator[None]:
    """NAT gateways stay "deleting" for a while after the delete, as on AWS."""
    sandbox.aws.set_ec2_delays(nat_gateway_deletion_seconds=2)
    yield
    sandbox.aws.set_ec2_delays(nat_gateway_deletion_seconds=0)


def teardown(sandbox: Sandbox, tags: dict[str, str], dry_run: bool = False) -> list[dict[str, Any]]:
    """The teardown Dag's order: IRSA role, OIDC provider (while the cluster still names it), cluster and the rest."""
    return [*delete_irsa_and_oidc(tags, dry_run), delete_cluster(tags, dry_run=dry_run).execute({})]


def delete_irsa_and_oidc(tags: dict[str, str], dry_run: bool = False) -> list[dict[str, Any]]:
    return [
        DeleteIrsaRoleOperator(task_id="irsa", role_names=[IRSA_ROLE], tags=tags, dry_run=dry_run).execute({}),
        DeleteOidcProviderOperator(task_id="oidc", eks_cluster_name=CLUSTER, tags=tags, dry_run=dry_run).execute({}),
    ]


def delete_cluster(tags: dict[str, str], **overrides: Any) -> DeleteEksClusterOperator:
    kwargs = {"cluster_name": CLUSTER, "role_names": EKS_ROLES, "tags": tags, "deferrable": False, "poll_interval": 0.2, **overrides}
    return DeleteEksClusterOperator(task_id="eks", **kwargs)


async def first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger yielded no event")


def make_foreign_resources(sandbox: Sandbox) -> dict[str, str]:
    """What the customer already had, untagged: a role, a VPC and an EKS cluster."""
    iam, ec2, eks = (sandbox.aws.admin_client(s) for s in ("iam", "ec2", "eks"))
    role = iam.create_role(RoleName="customer-role", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    eks.create_cluster(name="customer-cluster", roleArn=role["Arn"], resourcesVpcConfig={"subnetIds": [subnet]})
    return {"role": "customer-role", "vpc": vpc, "cluster": "customer-cluster"}


def ours(sandbox: Sandbox) -> dict[str, list[str]]:
    iam, ec2, eks = (sandbox.aws.admin_client(s) for s in ("iam", "ec2", "eks"))
    tag = [{"Name": "tag:remote-agents:environment", "Values": ["sandbox"]}]
    return {
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"] in [IRSA_ROLE, *EKS_ROLES]],
        "local_policies": [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"] if ":aws:policy/" not in p["Arn"]],
        "oidc_providers": [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]],
        "clusters": [c for c in eks.list_clusters()["clusters"] if c == CLUSTER],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=tag)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=tag)["Subnets"]],
        "internet_gateways": [g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=tag)["InternetGateways"]],
        "elastic_ips": [a["AllocationId"] for a in ec2.describe_addresses(Filters=tag)["Addresses"]],
        "route_tables": [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=tag)["RouteTables"]],
        "nat_gateways": [n["NatGatewayId"] for n in ec2.describe_nat_gateways(Filter=tag)["NatGateways"] if n["State"] != "deleted"],
    }


def test_teardown_after_bootstrap_leaves_nothing_of_ours(sandbox: Sandbox, bootstrapped: dict[str, Any]) -> None:
    teardown(sandbox, bootstrapped["tags"])

    assert all(found == [] for found in ours(sandbox).values()), ours(sandbox)


def test_teardown_leaves_untagged_pre_existing_resources_alone(sandbox: Sandbox, bootstrapped: dict[str, Any]) -> None:
    foreign = make_foreign_resources(sandbox)

    teardown(sandbox, bootstrapped["tags"])

    iam, ec2, eks = (sandbox.aws.admin_client(s) for s in ("iam", "ec2", "eks"))
    assert iam.get_role(RoleName=foreign["role"])["Role"]["RoleName"] == "customer-role"
    assert ec2.describe_vpcs(VpcIds=[foreign["vpc"]])["Vpcs"]
    assert eks.list_clusters()["clusters"] == ["customer-cluster"]


def test_an_untagged_cluster_and_role_of_the_same_name_are_skipped(sandbox: Sandbox) -> None:
    sandbox.reset()
    foreign = make_foreign_resources(sandbox)
    tags = naming.ownership_tags(sandbox.spec)

    result = DeleteEksClusterOperator(
        task_id="eks", cluster_name=foreign["cluster"], role_names=[foreign["role"]], tags=tags, deferrable=False,
    ).execute({})

    assert result["skipped"] == ["eks:cluster/customer-cluster", "iam:role/customer-role"]
    assert sandbox.aws.admin_client("eks").list_clusters()["clusters"] == ["customer-cluster"]


def test_a_second_teardown_finds_everything_absent_and_changes_nothing(sandbox: Sandbox, bootstrapped: dict[str, Any]) -> None:
    teardown(sandbox, bootstrapped["tags"])
    sandbox.aws.request_log.clear()

    results = teardown(sandbox, bootstrapped["tags"])

    assert sandbox.aws.request_log.mutating_calls == []
    assert {c["action"] for result in results for c in result["changes"]} == {"absent"}


def test_teardown_dry_run_deletes_nothing_and_lists_the_plan(sandbox: Sandbox, bootstrapped: dict[str, Any]) -> None:
    results = teardown(sandbox, bootstrapped["tags"], dry_run=True)

    assert sandbox.aws.request_log.mutating_calls == []
    planned = {c["resource"]: c["action"] for result in results for c in result["changes"]}
    assert planned[f"eks:cluster/{CLUSTER}"] == planned[f"iam:role/{IRSA_ROLE}"] == planned["ec2:vpc/remote-agents-sandbox"] == "delete"
    assert ours(sandbox)["clusters"] == [CLUSTER]


def test_the_vpc_deletion_defers_while_nat_gateways_are_deleting_and_finishes_after_the_event(
    sandbox: Sandbox, bootstrapped: dict[str, Any], slow_nat_deletion: None
) -> None:
    delete_irsa_and_oidc(bootstrapped["tags"])
    op = delete_cluster(bootstrapped["tags"], deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, NatGatewaysDeletedTrigger) and deferred.value.method_name == "execute_complete"
    waiting = ours(sandbox)
    assert waiting["clusters"] == [] and waiting["nat_gateways"] and waiting["elastic_ips"] and waiting["vpcs"]
    event = asyncio.run(first_event(trigger))
    assert event.payload["status"] == "success"
    result = op.execute_complete({}, event.payload)
    assert all(found == [] for found in ours(sandbox).values()), ours(sandbox)
    deleted = {c["resource"] for c in result["changes"] if c["action"] == "deleted"}
    assert {f"eks:cluster/{CLUSTER}", f"ec2:nat-gateway/{CLUSTER}", f"ec2:elastic-ip/{CLUSTER}", f"ec2:vpc/{CLUSTER}",
            *(f"iam:role/{role}" for role in EKS_ROLES)} <= deleted


def test_without_deferral_the_task_waits_for_the_nat_gateways_then_deletes_the_rest(
    sandbox: Sandbox, bootstrapped: dict[str, Any], slow_nat_deletion: None
) -> None:
    teardown(sandbox, bootstrapped["tags"])

    assert all(found == [] for found in ours(sandbox).values()), ours(sandbox)


def test_nat_gateways_still_deleting_when_the_trigger_gives_up_fail_the_task_and_keep_the_vpc(
    sandbox: Sandbox, bootstrapped: dict[str, Any], slow_nat_deletion: None
) -> None:
    op = delete_cluster(bootstrapped["tags"], deferrable=True, max_attempts=1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})

    event = asyncio.run(first_event(deferred.value.trigger))

    assert event.payload["status"] == "error"
    with pytest.raises(ClusterError, match="NAT gateways .* re-run the teardown"):
        op.execute_complete({}, event.payload)
    assert ours(sandbox)["vpcs"] and ours(sandbox)["elastic_ips"]


def test_the_nat_gateway_trigger_survives_a_serialize_round_trip() -> None:
    trigger = NatGatewaysDeletedTrigger(
        nat_gateway_ids=["nat-1"], result={"changes": [], "facts": {}}, waiter_delay=2.0, waiter_max_attempts=7,
        aws_conn_id="aws_x", region_name="eu-west-1",
    )
    classpath, kwargs = trigger.serialize()

    assert classpath == "remote_agents.triggers.vpc.NatGatewaysDeletedTrigger"
    assert NatGatewaysDeletedTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs
