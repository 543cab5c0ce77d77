from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.environment import Sandbox
from sandbox.aws import AwsCall, AwsEmulator
from sandbox.moto_iam import service_account_token

pytestmark = pytest.mark.sandbox

BUCKET = "agents-xcom"
ROLE_NAME = "airflow-worker"
MANAGEMENT_CONN = "sandbox_aws"
AGENT_CONN = "sandbox_agent_aws"
NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture(scope="module")
def aws(sandbox: Sandbox) -> AwsEmulator:
    # moto's state is process-global: every test shares the session sandbox's emulator.
    return sandbox.aws


@pytest.fixture(autouse=True)
def clean_aws(sandbox: Sandbox) -> None:
    sandbox.reset()
    sandbox.aws.set_eks_delays(cluster_seconds=0, nodegroup_seconds=0)


ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/SANDBOX"
SUBJECT_NAMESPACE, SUBJECT_NAME = "agents", "worker"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("irsa") / "token"
    path.write_text(service_account_token(f"https://{ISSUER}", SUBJECT_NAMESPACE, SUBJECT_NAME))
    return str(path)


@pytest.fixture(scope="module")
def airflow_env(aws: AwsEmulator, token_file: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """AIRFLOW_HOME in a temp dir and both Connections as AIRFLOW_CONN_* env vars, before Airflow is imported."""
    role_arn = f"arn:aws:iam::{aws.account_id}:role/{ROLE_NAME}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        patch.setenv(f"AIRFLOW_CONN_{MANAGEMENT_CONN.upper()}", json.dumps(aws.aws_connection()))
        agent_connection = aws.web_identity_connection(role_arn, token_file)
        patch.setenv(f"AIRFLOW_CONN_{AGENT_CONN.upper()}", json.dumps(agent_connection))
        yield


@pytest.fixture
def irsa_role(aws: AwsEmulator) -> str:
    """The worker role as the bootstrap creates it: web-identity trust, S3 under xcom/, secrets under airflow/."""
    iam = aws.admin_client("iam")
    issuer = ISSUER
    provider_arn = iam.create_open_id_connect_provider(
        Url=f"https://{issuer}", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["a" * 40]
    )["OpenIDConnectProviderArn"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{issuer}:sub": "system:serviceaccount:agents:worker"}},
            }
        ],
    }
    permissions = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": f"arn:aws:s3:::{BUCKET}/xcom/*",
            },
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"},
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": f"arn:aws:secretsmanager:{aws.region}:{aws.account_id}:secret:airflow/*",
            },
        ],
    }
    role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="agents", PolicyDocument=json.dumps(permissions))
    aws.admin_client("s3").create_bucket(Bucket=BUCKET)
    secrets = aws.admin_client("secretsmanager")
    secrets.create_secret(Name="airflow/variables/canary", SecretString="chirp")
    secrets.create_secret(Name="other/secret", SecretString="hidden")
    return str(role_arn)


def status_code(error: pytest.ExceptionInfo[ClientError]) -> int:
    return int(error.value.response["ResponseMetadata"]["HTTPStatusCode"])


# -- Airflow hooks through a Connection's endpoint_url ---------------------------------------


def test_airflow_hooks_reach_moto_with_the_management_connection(airflow_env: None, aws: AwsEmulator) -> None:
    from airflow.providers.amazon.aws.hooks.eks import ClusterStates, EksHook
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook

    eks = EksHook(aws_conn_id=MANAGEMENT_CONN)
    eks.create_cluster(name="agents", roleArn=f"arn:aws:iam::{aws.account_id}:role/eks", resourcesVpcConfig={})
    assert eks.get_cluster_state(clusterName="agents") == ClusterStates.ACTIVE

    s3 = S3Hook(aws_conn_id=MANAGEMENT_CONN)
    s3.create_bucket(bucket_name="management-bucket")
    s3.load_string("hello", key="a/b.txt", bucket_name="management-bucket")
    assert s3.read_key("a/b.txt", bucket_name="management-bucket") == "hello"

    aws.admin_client("secretsmanager").create_secret(Name="airflow/connections/db", SecretString="postgres://x")
    assert SecretsManagerHook(aws_conn_id=MANAGEMENT_CONN).get_secret("airflow/connections/db") == "postgres://x"


# -- IAM enforcement -------------------------------------------------------------------------


def test_web_identity_connection_is_limited_to_the_xcom_prefix(airflow_env: None, irsa_role: str) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3 = S3Hook(aws_conn_id=AGENT_CONN)
    s3.load_string("payload", key="xcom/run-1/value", bucket_name=BUCKET)
    assert s3.read_key("xcom/run-1/value", bucket_name=BUCKET) == "payload"
    with pytest.raises(ClientError) as denied:
        s3.load_string("payload", key="logs/run-1", bucket_name=BUCKET)
    assert status_code(denied) == 403


def test_web_identity_connection_reads_secrets_only_under_the_prefix(airflow_env: None, irsa_role: str) -> None:
    from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook

    secrets = SecretsManagerHook(aws_conn_id=AGENT_CONN)
    assert secrets.get_secret("airflow/variables/canary") == "chirp"
    with pytest.raises(ClientError) as denied:
        secrets.get_secret("other/secret")
    assert status_code(denied) == 403


def test_irsa_env_vars_give_the_role_through_botocores_default_chain(
    aws: AwsEmulator, irsa_role: str, token_file: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name, value in aws.irsa_env(irsa_role, token_file).items():
        monkeypatch.setenv(name, value)

    session = boto3.Session()
    assert session.get_credentials().method == "assume-role-with-web-identity"
    s3 = session.client("s3")
    s3.put_object(Bucket=BUCKET, Key="xcom/from-pod", Body=b"x")
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=BUCKET, Key="elsewhere/from-pod", Body=b"x")
    assert status_code(denied) == 403


def test_anonymous_calls_are_rejected(aws: AwsEmulator) -> None:
    stranger = boto3.client(
        "s3",
        endpoint_url=aws.endpoint_url,
        region_name=aws.region,
        aws_access_key_id="AKIAUNKNOWNUNKNOWN00",
        aws_secret_access_key="not-a-real-secret",
        config=NO_RETRIES,
    )
    with pytest.raises(ClientError) as denied:
        stranger.list_buckets()
    assert status_code(denied) == 403


def test_unsigned_calls_are_rejected_with_403_not_500(aws: AwsEmulator) -> None:
    response = httpx.get(f"{aws.endpoint_url}/")
    assert response.status_code == 403


# -- AWS's evaluation of conditions and web identity trust (sandbox/moto_iam.py) -------------------


def assume_with_token(aws: AwsEmulator, role_arn: str, token: str) -> dict[str, Any]:
    sts = boto3.client("sts", endpoint_url=aws.endpoint_url, region_name=aws.region, config=NO_RETRIES,
                       aws_access_key_id="unused", aws_secret_access_key="unused")
    return dict(sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="test", WebIdentityToken=token))


def test_web_identity_token_of_the_trusted_service_account_is_accepted(aws: AwsEmulator, irsa_role: str) -> None:
    token = service_account_token(f"https://{ISSUER}", SUBJECT_NAMESPACE, SUBJECT_NAME)
    assert assume_with_token(aws, irsa_role, token)["Credentials"]["AccessKeyId"]


@pytest.mark.parametrize(
    ("issuer", "namespace", "name", "code", "message"),
    [
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_oidc_user-id.html:
        # the trust's :sub condition names one ServiceAccount; another one's token is refused.
        (f"https://{ISSUER}", SUBJECT_NAMESPACE, "triggerer", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        (f"https://{ISSUER}", "other-namespace", SUBJECT_NAME, "AccessDenied", "Not authorized"),
        # https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html#API_AssumeRoleWithWebIdentity_Errors
        ("https://oidc.eks.us-east-1.amazonaws.com/id/UNKNOWN", SUBJECT_NAMESPACE, SUBJECT_NAME, "InvalidIdentityToken",
         "No OpenIDConnect provider found"),
    ],
)
def test_web_identity_token_is_checked_against_the_trust_policy(
    aws: AwsEmulator, irsa_role: str, issuer: str, namespace: str, name: str, code: str, message: str
) -> None:
    with pytest.raises(ClientError) as refused:
        assume_with_token(aws, irsa_role, service_account_token(issuer, namespace, name))
    assert refused.value.response["Error"]["Code"] == code
    assert status_code(refused) == (403 if code == "AccessDenied" else 400)
    assert message in refused.value.response["Error"]["Message"]


def test_a_token_not_signed_by_the_cluster_is_refused(aws: AwsEmulator, irsa_role: str) -> None:
    with pytest.raises(ClientError) as refused:
        assume_with_token(aws, irsa_role, "projected-service-account-token")
    assert refused.value.response["Error"]["Code"] == "InvalidIdentityToken"


def user_with_policy(aws: AwsEmulator, statements: list[dict[str, Any]], service: str) -> Any:
    iam = aws.admin_client("iam")
    iam.create_user(UserName="conditions")
    iam.put_user_policy(UserName="conditions", PolicyName="p",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName="conditions")["AccessKey"]
    return boto3.client(service, endpoint_url=aws.endpoint_url, region_name=aws.region, config=NO_RETRIES,
                        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])


def test_list_bucket_with_a_prefix_condition_denies_head_bucket_as_aws_does(aws: AwsEmulator) -> None:
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html (s3:prefix on
    # ListBucket) and https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html (needs
    # s3:ListBucket, sends no prefix): an absent key makes StringLike false.
    aws.admin_client("s3").create_bucket(Bucket=BUCKET)
    s3 = user_with_policy(aws, [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}",
                                 "Condition": {"StringLike": {"s3:prefix": ["xcom/*"]}}}], "s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="xcom/run")["KeyCount"] == 0
    for call in (lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/"), lambda: s3.list_objects_v2(Bucket=BUCKET),
                 lambda: s3.head_bucket(Bucket=BUCKET)):
        with pytest.raises(ClientError) as denied:
            call()
        assert status_code(denied) == 403


def test_request_tag_conditions_decide_tagged_creates(aws: AwsEmulator) -> None:
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/access_tags.html#access_tags_control-requests
    iam = user_with_policy(aws, [{"Effect": "Allow", "Action": ["iam:CreateRole", "iam:TagRole"], "Resource": "*",
                                  "Condition": {"StringEquals": {"aws:RequestTag/team": "agents"}}}], "iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName="tagged", AssumeRolePolicyDocument=trust, Tags=[{"Key": "team", "Value": "agents"}])
    for tags in ([{"Key": "team", "Value": "other"}], []):
        with pytest.raises(ClientError) as denied:
            iam.create_role(RoleName="untagged", AssumeRolePolicyDocument=trust, Tags=tags)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"


# -- simulated EKS latency -------------------------------------------------------------------


def wait_until_active(describe: Callable[[], str], timeout: float) -> float:
    """Poll like a waiter; return the seconds it took to become ACTIVE."""
    started = time.monotonic()
    while describe() != "ACTIVE":
        assert time.monotonic() - started < timeout, "never became ACTIVE"
        time.sleep(0.1)
    return time.monotonic() - started


def test_cluster_and_nodegroup_are_creating_until_the_configured_delay_has_passed(aws: AwsEmulator) -> None:
    # Generous delays: the first node group makes moto import its EC2 models (about a second), and a
    # loaded 2-core machine can take as long again to answer the create call.
    aws.set_eks_delays(cluster_seconds=2.5, nodegroup_seconds=4.0)
    eks = aws.admin_client("eks")
    eks.create_cluster(name="slow", roleArn=f"arn:aws:iam::{aws.account_id}:role/eks", resourcesVpcConfig={})

    def cluster_status() -> str:
        return str(eks.describe_cluster(name="slow")["cluster"]["status"])

    def nodegroup_status() -> str:
        return str(eks.describe_nodegroup(clusterName="slow", nodegroupName="workers")["nodegroup"]["status"])

    assert cluster_status() == "CREATING"
    assert wait_until_active(cluster_status, timeout=10) >= 0.5

    node_role = f"arn:aws:iam::{aws.account_id}:role/nodes"
    eks.create_nodegroup(clusterName="slow", nodegroupName="workers", subnets=["subnet-1"], nodeRole=node_role)
    assert nodegroup_status() == "CREATING"
    wait_until_active(nodegroup_status, timeout=10)


def test_eks_delays_can_be_set_over_the_admin_endpoint(aws: AwsEmulator) -> None:
    reply = httpx.put(f"{aws.endpoint_url}/sandbox/eks-delays", json={"cluster_seconds": 30})
    assert reply.json() == {"cluster_seconds": 30.0, "nodegroup_seconds": 0.0}
    eks = aws.admin_client("eks")
    eks.create_cluster(name="admin-slow", roleArn=f"arn:aws:iam::{aws.account_id}:role/eks", resourcesVpcConfig={})
    assert eks.describe_cluster(name="admin-slow")["cluster"]["status"] == "CREATING"


def test_a_deleted_nat_gateway_is_deleting_until_the_configured_delay_has_passed(aws: AwsEmulator) -> None:
    ec2 = aws.admin_client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    reply = httpx.put(f"{aws.endpoint_url}/sandbox/ec2-delays", json={"nat_gateway_deletion_seconds": 1.5})
    assert reply.json() == {"nat_gateway_deletion_seconds": 1.5}
    try:
        ec2.delete_nat_gateway(NatGatewayId=nat)

        def state() -> str:
            return str(ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"])

        assert state() == "deleting"
        ec2.get_waiter("nat_gateway_deleted").wait(NatGatewayIds=[nat], WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        assert state() == "deleted"
    finally:
        aws.set_ec2_delays(nat_gateway_deletion_seconds=0)


# -- faults ----------------------------------------------------------------------------------


def test_throttling_reaches_botocore_then_clears(aws: AwsEmulator) -> None:
    eks = aws.admin_client("eks", config=NO_RETRIES)
    aws.throttle("eks", "ListClusters", count=1)
    with pytest.raises(ClientError) as throttled:
        eks.list_clusters()
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert status_code(throttled) == 429
    assert eks.list_clusters()["clusters"] == []


def test_throttling_over_the_admin_endpoint_uses_the_query_protocol_code(aws: AwsEmulator) -> None:
    httpx.post(f"{aws.endpoint_url}/sandbox/faults/throttle", json={"service": "iam", "count": 5})
    iam = aws.admin_client("iam", config=NO_RETRIES)
    with pytest.raises(ClientError) as throttled:
        iam.list_roles()
    assert throttled.value.response["Error"]["Code"] == "Throttling"
    httpx.delete(f"{aws.endpoint_url}/sandbox/faults")
    assert iam.list_roles()["Roles"] == []


def test_added_latency_slows_only_that_service(aws: AwsEmulator) -> None:
    aws.add_latency("s3", 0.3)
    started = time.monotonic()
    aws.admin_client("s3").list_buckets()
    assert time.monotonic() - started >= 0.3
    aws.clear_faults()


# -- request log -----------------------------------------------------------------------------


def test_request_log_marks_mutating_and_read_only_calls(aws: AwsEmulator) -> None:
    s3 = aws.admin_client("s3")
    s3.create_bucket(Bucket="logged")
    s3.put_object(Bucket="logged", Key="k", Body=b"v")
    s3.head_object(Bucket="logged", Key="k")
    aws.admin_client("eks").list_clusters()
    aws.admin_client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")
    aws.admin_client("secretsmanager").list_secrets()
    aws.admin_client("sts").get_caller_identity()

    assert aws.request_log.calls == [
        AwsCall("s3", "CreateBucket", True),
        AwsCall("s3", "PutObject", True),
        AwsCall("s3", "HeadObject", False),
        AwsCall("eks", "ListClusters", False),
        AwsCall("iam", "CreateRole", True),
        AwsCall("secretsmanager", "ListSecrets", False),
        AwsCall("sts", "GetCallerIdentity", False),
    ]
    logged = httpx.get(f"{aws.endpoint_url}/sandbox/requests").json()["calls"]
    assert [call["action"] for call in logged if call["mutating"]] == ["CreateBucket", "PutObject", "CreateRole"]


def test_reset_keeps_admin_keys_and_enforcement(aws: AwsEmulator) -> None:
    s3 = aws.admin_client("s3")
    s3.create_bucket(Bucket="before-reset")
    httpx.post(f"{aws.endpoint_url}/sandbox/reset")
    assert s3.list_buckets()["Buckets"] == []
    assert httpx.get(f"{aws.endpoint_url}/").status_code == 403
