"""The management Deployment's own IAM policy (render/policies.build_management_policy) and its CLI section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import parliament
import pytest
import yaml

from remote_agents import naming
from remote_agents.cli import main
from remote_agents.errors import ConfigError
from remote_agents.render.policies import build_management_policy
from remote_agents.spec import EnvironmentSpec, load_spec, parse_spec
from sandbox.iam_policy import Decision, Request, evaluate

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
ACCOUNT = "111122223333"


def spec_named(name: str) -> EnvironmentSpec:
    return load_spec(ROOT / "include" / "environments" / f"{name}.yaml")


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def actions(policy: dict[str, Any]) -> set[str]:
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_management_policy_has_no_parliament_findings(spec_file: Path) -> None:
    policy = build_management_policy(load_spec(spec_file), ACCOUNT)

    assert parliament.analyze_policy_string(json.dumps(policy)).findings == []


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_community_auditors_flag_only_the_role_management_the_bootstrap_exists_for(spec_file: Path) -> None:
    analyzed = parliament.analyze_policy_string(json.dumps(build_management_policy(load_spec(spec_file), ACCOUNT)),
                                                include_community_auditors=True)

    assert {finding.issue for finding in analyzed.findings} <= {"PERMISSIONS_MANAGEMENT_ACTIONS"}


def test_existing_cluster_gets_only_s3_and_secrets_manager() -> None:
    policy = build_management_policy(spec_named("onprem"), ACCOUNT)

    assert {action.split(":")[0] for action in actions(policy)} == {"s3", "secretsmanager"}


@pytest.mark.parametrize("name", ["tutorial", "multi-queue", "sandbox"])
def test_eks_actions_name_only_the_spec_cluster_and_its_node_groups(name: str) -> None:
    spec = spec_named(name)
    assert spec.eks is not None
    policy = statements(build_management_policy(spec, ACCOUNT))
    prefix = f"arn:aws:eks:{spec.eks.region}:{ACCOUNT}:"

    assert policy["EksCluster"]["Resource"] == f"{prefix}cluster/{spec.eks.name}"
    assert policy["EksNodegroups"]["Resource"] == f"{prefix}nodegroup/{spec.eks.name}/*/*"
    assert policy["EksCreateTaggedCluster"]["Condition"] == {
        "StringEquals": {"aws:RequestTag/remote-agents:environment": spec.name}}


@pytest.mark.parametrize("name", ["tutorial", "multi-queue", "sandbox"])
def test_iam_role_actions_name_exactly_our_irsa_and_eks_roles(name: str) -> None:
    spec = spec_named(name)
    names = [*naming.irsa_role_names(spec).values(), *naming.eks_role_names(spec).values()]

    resources = statements(build_management_policy(spec, ACCOUNT))["ManageOurRoles"]["Resource"]

    assert sorted(resources) == sorted(f"arn:aws:iam::{ACCOUNT}:role/{role}" for role in names)


def test_pass_role_is_only_for_the_eks_roles_and_only_to_eks() -> None:
    spec = spec_named("tutorial")

    passing = statements(build_management_policy(spec, ACCOUNT))["PassEksRoles"]

    assert sorted(passing["Resource"]) == sorted(
        f"arn:aws:iam::{ACCOUNT}:role/{role}" for role in naming.eks_role_names(spec).values())
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "eks.amazonaws.com"}}


def test_given_eks_role_arns_are_passed_but_never_managed() -> None:
    data = yaml.safe_load((ROOT / "include" / "environments" / "tutorial.yaml").read_text())
    given = {"cluster_role_arn": f"arn:aws:iam::{ACCOUNT}:role/platform-eks", "node_role_arn": f"arn:aws:iam::{ACCOUNT}:role/platform-nodes"}
    data["cluster"].update(given)

    policy = statements(build_management_policy(parse_spec(data), ACCOUNT))

    assert sorted(policy["PassEksRoles"]["Resource"]) == sorted(given.values())
    assert not set(given.values()) & set(policy["ManageOurRoles"]["Resource"])
    assert "AttachEksManagedPolicies" not in policy


def test_vpc_changes_need_our_tag_and_creates_must_set_it() -> None:
    policy = statements(build_management_policy(spec_named("tutorial"), ACCOUNT))

    assert policy["VpcCreateTagged"]["Condition"] == {"StringEquals": {"aws:RequestTag/remote-agents:environment": "tutorial"}}
    assert policy["VpcChangeOwned"]["Condition"] == {"StringEquals": {"ec2:ResourceTag/remote-agents:environment": "tutorial"}}
    assert set(policy["VpcTagOnCreateOnly"]["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        action.split(":")[1] for action in policy["VpcCreateTagged"]["Action"]}
    assert all(action.startswith("ec2:Describe") for action in policy["VpcDescribe"]["Action"])


def test_no_ec2_when_the_spec_names_its_subnets() -> None:
    data = yaml.safe_load((ROOT / "include" / "environments" / "tutorial.yaml").read_text())
    data["cluster"]["subnet_ids"] = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]

    policy = build_management_policy(parse_spec(data), ACCOUNT)

    assert not any(action.startswith("ec2:") for action in actions(policy))


def test_wildcard_resources_are_only_where_aws_has_no_resource_level_permission() -> None:
    policy = build_management_policy(spec_named("multi-queue"), ACCOUNT)

    starred = {action for s in policy["Statement"] if "*" in as_list(s["Resource"]) for action in s["Action"]}

    assert starred == {"sts:GetCallerIdentity", "eks:CreateCluster", "iam:ListOpenIDConnectProviders",
                       "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInternetGateways",
                       "ec2:DescribeNatGateways", "ec2:DescribeRouteTables", "ec2:DescribeAddresses"}


def test_health_reads_only_the_xcom_and_log_prefixes_and_writes_only_the_canary() -> None:
    policy = statements(build_management_policy(spec_named("multi-queue"), ACCOUNT))

    assert sorted(policy["HealthReadAgentObjects"]["Resource"]) == [
        "arn:aws:s3:::acme-agents-logs/multi/logs/*", "arn:aws:s3:::acme-agents-xcom/multi/xcom/*"]
    canaries = [
        f"arn:aws:secretsmanager:us-west-2:{ACCOUNT}:secret:agents/multi/{kind}/remote_agents_canary__multi_queue{suffix}"
        for kind in ("connections", "variables") for suffix in ("", "-??????")
    ]
    assert sorted(policy["HealthWriteCanary"]["Resource"]) == canaries
    assert (policy["TeardownDeleteCanary"]["Action"], sorted(policy["TeardownDeleteCanary"]["Resource"])) == (
        ["secretsmanager:DeleteSecret"], canaries)


def test_environments_in_one_account_write_and_delete_only_their_own_canary() -> None:
    """Two environments with the same secrets prefixes, one named like the start of the other's name."""
    data = yaml.safe_load((ROOT / "include" / "environments" / "sandbox.yaml").read_text())
    first, second = parse_spec(data), parse_spec({**data, "name": "sandbox-b"})
    policy = build_management_policy(first, ACCOUNT)

    def decisions(spec: EnvironmentSpec, suffix: str) -> list[Decision]:
        arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{naming.canary_secret_names(spec)['variable']}{suffix}"
        return [evaluate([policy], Request(action, arn))
                for action in ("secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret")]

    assert naming.canary_secret_names(first) != naming.canary_secret_names(second)
    assert decisions(first, "-AbC123") == decisions(first, "") == [Decision.ALLOW, Decision.ALLOW]
    assert decisions(second, "-AbC123") == decisions(second, "") == [Decision.IMPLICIT_DENY, Decision.IMPLICIT_DENY]


def test_arns_follow_the_partition_of_the_region() -> None:
    data = yaml.safe_load((ROOT / "include" / "environments" / "onprem.yaml").read_text())
    data["backends"]["aws_region"] = "cn-north-1"

    policy = build_management_policy(parse_spec(data), ACCOUNT)

    assert all(resource.startswith("arn:aws-cn:") for s in policy["Statement"] for resource in as_list(s["Resource"]))


def test_bad_account_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="12 digits"):
        build_management_policy(spec_named("tutorial"), "1234")


def test_cli_prints_the_management_policy_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = ROOT / "include" / "environments" / "tutorial.yaml"

    assert main(["render", str(spec_file), "--only", "management-policy", "--format", "json", "--account-id", ACCOUNT]) == 0

    assert json.loads(capsys.readouterr().out) == build_management_policy(load_spec(spec_file), ACCOUNT)
