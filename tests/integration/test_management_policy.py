"""The management policy (``build_management_policy``) is enough for the bootstrap, health and teardown
Dags, and no broader than what they call: enforced by moto IAM against a user holding only that policy.

The sandbox's ``aws_default`` Connection is pointed at an IAM user whose one inline policy is the
rendered management policy, and the sandbox evaluates it as AWS does (``sandbox/moto_iam.py``): on
the real ARNs of EKS clusters, node groups, EC2 resources, IAM roles and OIDC providers, with the
tag conditions of the creates, ``iam:PassedToService`` on the roles EKS is handed and
``iam:PolicyARN`` on attachments.

Every call is recorded with the access key that signed it, so the agents' own calls (the stand-in
runs with the IRSA role) and the test's admin set-up are told apart from the management identity's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from remote_agents import naming
from remote_agents.health import contract
from remote_agents.render.policies import build_management_policy
from sandbox.aws import identify_call
from sandbox.environment import Sandbox, conn_env_name

pytestmark = pytest.mark.sandbox

BOOTSTRAP = "remote_agents_bootstrap__sandbox"
TEARDOWN = "remote_agents_teardown__sandbox"
HEALTH = "remote_agents_health__sandbox"
MANAGEMENT_USER = "remote-agents-management"
# Allowed actions AWS authorizes as part of another call (sandbox/moto_iam.py checks them there), so no
# request names them: the call that implies each. The EKS service-linked roles are made by AWS on the
# first cluster of an account, which moto does not model.
IMPLIED_BY = {
    "iam:PassRole": "eks:CreateCluster",
    "iam:CreateServiceLinkedRole": "eks:CreateCluster",
    "eks:TagResource": "eks:CreateCluster",
    "ec2:CreateTags": "ec2:CreateVpc",
    "iam:TagOpenIDConnectProvider": "iam:CreateOpenIDConnectProvider",
    "secretsmanager:TagResource": "secretsmanager:CreateSecret",
}
# Allowed for a drift moto cannot produce: it implements neither Add- nor RemoveClientIDToOpenIDConnectProvider.
NOT_IN_MOTO = {"iam:AddClientIDToOpenIDConnectProvider"}
# API operations that IAM authorizes as another action.
AUTHORIZED_AS = {"s3:HeadBucket": "s3:ListBucket", "s3:HeadObject": "s3:GetObject", "s3:ListObjectsV2": "s3:ListBucket"}


@dataclass(frozen=True)
class SignedCall:
    access_key: str
    action: str  # "service:Action", as IAM names it
    status: int


class CallRecorder:
    """WSGI middleware around the sandbox's AWS app: who called what, and what AWS answered."""

    def __init__(self) -> None:
        self.calls: list[SignedCall] = []

    def wrap(self, app: Any) -> Any:
        def recorded(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO", "").startswith(("/sandbox/", "/moto-api")):
                return app(environ, start_response)
            call = identify_call(environ)
            key = _access_key(environ.get("HTTP_AUTHORIZATION", ""))

            def capture(status: str, headers: Any, *args: Any) -> Any:
                action = f"{call.service}:{call.action}"
                self.calls.append(SignedCall(key, AUTHORIZED_AS.get(action, action), int(status.split()[0])))
                return start_response(status, headers, *args)

            return app(environ, capture)

        return recorded

    def by(self, access_key: str) -> list[SignedCall]:
        return [call for call in self.calls if call.access_key == access_key]


def _access_key(authorization: str) -> str:
    # "AWS4-HMAC-SHA256 Credential=AKIA.../20250101/us-east-1/eks/aws4_request, ..."
    try:
        return authorization.split("Credential=", 1)[1].split("/", 1)[0]
    except IndexError:
        return ""


# -- the management identity ---------------------------------------------------------------------------


@pytest.fixture
def management(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, CallRecorder]]:
    """A clean sandbox whose `aws_default` Connection holds the keys of a user with only the management policy."""
    sandbox.reset()
    aws = sandbox.aws
    iam = aws.admin_client("iam")
    iam.create_user(UserName=MANAGEMENT_USER)
    policy = build_management_policy(sandbox.spec, aws.account_id)
    iam.put_user_policy(UserName=MANAGEMENT_USER, PolicyName="remote-agents-management", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=MANAGEMENT_USER)["AccessKey"]
    connection = {"conn_type": "aws", "login": key["AccessKeyId"], "password": key["SecretAccessKey"],
                  "extra": {"endpoint_url": aws.endpoint_url, "region_name": aws.region}}
    monkeypatch.setenv(conn_env_name(sandbox.spec.aws_conn_id), json.dumps(connection))
    recorder = CallRecorder()
    server = aws._server._server  # the werkzeug server whose app the sandbox already wraps
    original = server.app
    server.app = recorder.wrap(original)
    try:
        yield key["AccessKeyId"], recorder
    finally:
        server.app = original
        sandbox.stop_agents()


def allowed_actions(policy: dict[str, Any]) -> set[str]:
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def run(dagbag: Any, dag_id: str, conf: dict[str, Any] | None = None) -> None:
    dag_run = dagbag.get_dag(dag_id).test(run_conf=conf) if conf is not None else dagbag.get_dag(dag_id).test()
    assert dag_run.state == "success", {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def bootstrap(dagbag: Any, sandbox: Sandbox) -> None:
    run(dagbag, BOOTSTRAP, {"dry_run": False, "rotate_tokens": False, "force_upgrade": False, "skip_cluster_creation": False,
                            "chart_version": sandbox.spec.chart.version})


def drift(sandbox: Sandbox) -> None:
    """As the admin: what a re-run must repair, so the repairing calls are exercised (and allowed) too."""
    spec = sandbox.spec
    iam, ec2 = sandbox.aws.admin_client("iam"), sandbox.aws.admin_client("ec2")
    role = naming.irsa_role_names(spec)[None]
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    iam.untag_role(RoleName=role, TagKeys=["remote-agents:managed-by"])
    (provider,) = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider["Arn"], ThumbprintList=["0" * 40])
    tags = [{"Name": f"tag:{k}", "Values": [v]} for k, v in naming.ownership_tags(spec).items()]
    (vpc,) = ec2.describe_vpcs(Filters=tags)["Vpcs"]
    ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": False})
    (gateway,) = ec2.describe_internet_gateways(Filters=tags)["InternetGateways"]
    private = next(t for t in ec2.describe_route_tables(Filters=tags)["RouteTables"]
                   if any(tag["Value"].endswith("-private") for tag in t["Tags"] if tag["Key"] == "Name"))
    ec2.replace_route(RouteTableId=private["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway["InternetGatewayId"])


def node_role_in_an_instance_profile(sandbox: Sandbox) -> None:
    """EKS puts a managed node group's role in an instance profile; teardown must take it out."""
    iam = sandbox.aws.admin_client("iam")
    iam.create_instance_profile(InstanceProfileName="eks-nodes-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="eks-nodes-profile", RoleName=naming.eks_role_names(sandbox.spec)["node"])


def health(dagbag: Any, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    agents = sandbox.start_agents()
    monkeypatch.setenv(conn_env_name(sandbox.spec.astro.deployment_connection_id), json.dumps(sandbox.deployment_connection()))
    with agents.client() as client:
        client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)
    run(dagbag, HEALTH)
    sandbox.stop_agents()


def test_bootstrap_health_and_teardown_need_exactly_the_management_policy(
    dagbag: Any, sandbox: Sandbox, management: tuple[str, CallRecorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, recorder = management
    policy = build_management_policy(sandbox.spec, sandbox.aws.account_id)

    bootstrap(dagbag, sandbox)
    drift(sandbox)
    bootstrap(dagbag, sandbox)
    if HEALTH in dagbag.dag_ids:
        health(dagbag, sandbox, monkeypatch)
    node_role_in_an_instance_profile(sandbox)
    run(dagbag, TEARDOWN, {"confirm": sandbox.spec.name, "dry_run": False})

    calls = recorder.by(key)
    denied = sorted({call.action for call in calls if call.status == 403})
    assert denied == [], f"the management policy lacks {denied}"
    called = {call.action for call in calls}
    never_called = {action for action in allowed_actions(policy) - called - NOT_IN_MOTO if IMPLIED_BY.get(action) not in called}
    if HEALTH not in dagbag.dag_ids:
        never_called = {action for action in never_called if not action.startswith(("s3:", "secretsmanager:"))}
    assert never_called == set(), f"the management policy allows {sorted(never_called)}, which no Dag called"
    assert called <= allowed_actions(policy) | {"sts:GetCallerIdentity"}


def test_creates_without_the_ownership_tag_are_denied(sandbox: Sandbox, management: tuple[str, CallRecorder]) -> None:
    """The tag conditions are what keep creates with no resource ARN to our environment."""
    import boto3
    from botocore.exceptions import ClientError

    connection = json.loads(os.environ[conn_env_name(sandbox.spec.aws_conn_id)])
    session = boto3.Session(aws_access_key_id=connection["login"], aws_secret_access_key=connection["password"],
                            region_name=sandbox.aws.region)
    ec2 = session.client("ec2", endpoint_url=sandbox.aws.endpoint_url)
    eks = session.client("eks", endpoint_url=sandbox.aws.endpoint_url)
    spec = sandbox.spec
    assert spec.eks is not None
    someone_else = [{"ResourceType": "vpc", "Tags": [{"Key": "remote-agents:environment", "Value": "another-env"}]}]
    ours = [{"ResourceType": "vpc", "Tags": [{"Key": "remote-agents:environment", "Value": spec.name}]}]
    attempts = [
        lambda: ec2.create_vpc(CidrBlock="10.9.0.0/16"),
        lambda: ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=someone_else),
        lambda: eks.create_cluster(name=spec.eks.name, roleArn=f"arn:aws:iam::{sandbox.aws.account_id}:role/x",
                                   resourcesVpcConfig={}),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] in ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=ours)["Vpc"]
    ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": True})
    untagged = sandbox.aws.admin_client("ec2").create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]
    with pytest.raises(ClientError):
        ec2.modify_vpc_attribute(VpcId=untagged["VpcId"], EnableDnsHostnames={"Value": True})
