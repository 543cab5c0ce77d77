"""IAM policy documents (render/policies.py): least privilege, checked by parliament."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import parliament
from remote_agents import naming
from remote_agents.errors import ConfigError
from sandbox.iam_policy import Decision, Request, evaluate
from remote_agents.render.policies import (
    aws_partition,
    build_eks_cluster_trust_policy,
    build_eks_managed_policy_arns,
    build_eks_node_trust_policy,
    build_irsa_policies,
    build_irsa_trust_policy,
    build_permission_policy,
    build_role_arns,
)
from remote_agents.spec import EnvironmentSpec, XComBackendSpec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
IRSA_SPECS = ["tutorial", "sandbox", "multi-queue"]
ACCOUNT = "123456789012"
ISSUER_HOST = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
ISSUER = f"https://{ISSUER_HOST}"
# parliament lints identity policies. On a trust policy it always reports these two: a trust policy
# has no Resource element, and 1.6.4 knows SAML but not OIDC providers as federation sources.
TRUST_POLICY_FALSE_POSITIVES = {"MALFORMED", "UNKNOWN_FEDERATION_SOURCE"}




def spec_named(name: str) -> EnvironmentSpec:
    return load_spec(ROOT / "include" / "environments" / f"{name}.yaml")


def findings(policy: dict[str, Any]) -> list[tuple[str, Any]]:
    analyzed = parliament.analyze_policy_string(json.dumps(policy), include_community_auditors=True)
    return [(f.issue, f.detail) for f in analyzed.findings]


def resources(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        found.update(statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]])
    return found


@pytest.fixture(params=SPEC_FILES, ids=lambda p: p.stem)
def spec(request: pytest.FixtureRequest) -> EnvironmentSpec:
    return load_spec(request.param)


@pytest.mark.parametrize("component", [None, naming.WORKER, naming.TRIGGERER, naming.DAG_PROCESSOR])
def test_permission_policies_have_no_parliament_findings(spec: EnvironmentSpec, component: str | None) -> None:
    assert findings(build_permission_policy(spec, ACCOUNT, component)) == []


@pytest.mark.parametrize("name", IRSA_SPECS)
def test_trust_policies_have_only_the_known_parliament_false_positives(name: str) -> None:
    spec = spec_named(name)
    for role in build_irsa_policies(spec, ISSUER, ACCOUNT).values():
        assert {issue for issue, _ in findings(role["trust_policy"])} <= TRUST_POLICY_FALSE_POSITIVES


@pytest.mark.parametrize("build", [build_eks_cluster_trust_policy, build_eks_node_trust_policy])
def test_eks_trust_policies_have_only_the_missing_resource_false_positive(build: Any) -> None:
    assert {issue for issue, _ in findings(build(spec_named("tutorial")))} <= {"MALFORMED"}


@pytest.mark.parametrize("name", IRSA_SPECS)
def test_trust_policy_names_the_oidc_provider_and_the_exact_service_accounts(name: str) -> None:
    spec = spec_named(name)
    for component, role in build_irsa_policies(spec, ISSUER, ACCOUNT).items():
        (statement,) = role["trust_policy"]["Statement"]
        assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER_HOST}"}
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert list(statement["Condition"]) == ["StringEquals"]
        assert statement["Condition"]["StringEquals"] == {
            f"{ISSUER_HOST}:sub": naming.service_account_subjects(spec, component),
            f"{ISSUER_HOST}:aud": "sts.amazonaws.com",
        }
        assert "*" not in json.dumps(role["trust_policy"])


def test_per_component_trust_policies_split_the_service_accounts() -> None:
    spec = spec_named("multi-queue")
    subjects = {
        component: role["trust_policy"]["Statement"][0]["Condition"]["StringEquals"][f"{ISSUER_HOST}:sub"]
        for component, role in build_irsa_policies(spec, ISSUER, ACCOUNT).items()
    }
    assert subjects == {
        "dag-processor": ["system:serviceaccount:agents-multi:agents-dag-processor"],
        "triggerer": ["system:serviceaccount:agents-multi:agents-triggerer"],
        "worker": [f"system:serviceaccount:agents-multi:agents-worker-{w}" for w in ("default-worker", "etl", "ml")],
    }


@pytest.mark.parametrize(
    "component, expected",
    [
        (None, {"xcom", "state", "logs", "secrets"}),
        (naming.WORKER, {"xcom", "state", "logs", "secrets"}),
        (naming.TRIGGERER, {"xcom", "state", "logs", "secrets"}),  # asset watchers keep state
        (naming.DAG_PROCESSOR, {"logs", "secrets"}),
    ],
)
def test_permission_resources_are_the_exact_prefixes(component: str | None, expected: set[str]) -> None:
    spec = spec_named("multi-queue")
    every = {
        "xcom": "arn:aws:s3:::acme-agents-xcom/multi/xcom/*",
        "state": "arn:aws:s3:::acme-agents-xcom/multi/state/*",
        "logs": "arn:aws:s3:::acme-agents-logs/multi/logs/*",
    }
    buckets = {"arn:aws:s3:::acme-agents-logs"} | ({"arn:aws:s3:::acme-agents-xcom"} if expected & {"xcom", "state"} else set())
    secrets = {
        f"arn:aws:secretsmanager:us-west-2:{ACCOUNT}:secret:agents/multi/connections/*",
        f"arn:aws:secretsmanager:us-west-2:{ACCOUNT}:secret:agents/multi/variables/*",
    }
    assert resources(build_permission_policy(spec, ACCOUNT, component)) == {every[k] for k in expected - {"secrets"}} | buckets | secrets


def test_list_bucket_is_granted_unconditioned_on_exactly_the_agents_buckets() -> None:
    policy = build_permission_policy(spec_named("multi-queue"), ACCOUNT)
    (listing,) = [s for s in policy["Statement"] if s["Action"] == "s3:ListBucket"]
    assert "Condition" not in listing
    assert listing["Resource"] == ["arn:aws:s3:::acme-agents-logs", "arn:aws:s3:::acme-agents-xcom"]


@pytest.mark.parametrize(
    ("request_", "decision"),
    [
        # What s3fs sends for an XCom write, a state-store write and a task log upload, as AWS authorizes it.
        (Request("s3:ListBucket", "arn:aws:s3:::acme-agents-xcom"), Decision.ALLOW),  # HeadBucket: no s3:prefix
        (Request("s3:ListBucket", "arn:aws:s3:::acme-agents-xcom", context={"s3:prefix": "multi/xcom/run/"}), Decision.ALLOW),
        (Request("s3:PutObject", "arn:aws:s3:::acme-agents-xcom/multi/xcom/dag/run/task/0/return_value"), Decision.ALLOW),
        (Request("s3:PutObject", "arn:aws:s3:::acme-agents-xcom/multi/state/dag/run/task/0/key"), Decision.ALLOW),
        (Request("s3:PutObject", "arn:aws:s3:::acme-agents-logs/multi/logs/dag_id=d/run_id=r/attempt=1.log"), Decision.ALLOW),
        (Request("s3:GetObject", "arn:aws:s3:::acme-agents-logs/multi/logs/dag_id=d/run_id=r/attempt=1.log"), Decision.ALLOW),
        (Request("s3:PutObject", "arn:aws:s3:::acme-agents-xcom/elsewhere/key"), Decision.IMPLICIT_DENY),
        (Request("s3:DeleteObject", "arn:aws:s3:::acme-agents-logs/multi/logs/a.log"), Decision.IMPLICIT_DENY),
        (Request("s3:ListBucket", "arn:aws:s3:::someone-elses-bucket"), Decision.IMPLICIT_DENY),
        (Request("s3:CreateBucket", "arn:aws:s3:::acme-agents-xcom"), Decision.IMPLICIT_DENY),
    ],
)
def test_the_agents_policy_under_aws_evaluation(request_: Request, decision: Decision) -> None:
    assert evaluate([build_permission_policy(spec_named("multi-queue"), ACCOUNT)], request_) is decision


def test_log_objects_can_be_written_but_not_deleted() -> None:
    policy = build_permission_policy(spec_named("multi-queue"), ACCOUNT)
    log_actions = {a for s in policy["Statement"] if "arn:aws:s3:::acme-agents-logs/multi/logs/*" in s["Resource"] for a in s["Action"]}
    assert log_actions == {"s3:GetObject", "s3:PutObject"}


def test_secrets_access_is_read_only() -> None:
    policy = build_permission_policy(spec_named("tutorial"), ACCOUNT)
    (secrets,) = [s for s in policy["Statement"] if s["Sid"] == "ReadSecrets"]
    assert secrets["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]


def test_a_wildcard_reaching_a_policy_is_refused() -> None:
    # The spec refuses '*' in prefixes; model_construct skips that check to prove the builder refuses too.
    spec = spec_named("tutorial")
    xcom = spec.backends.xcom.model_construct(**{**spec.backends.xcom.model_dump(), "prefix": "x*"})
    backends = spec.backends.model_construct(**{**dict(spec.backends), "xcom": xcom})
    with pytest.raises(ConfigError, match="wildcard the spec did not ask for"):
        build_permission_policy(spec.model_construct(**{**dict(spec), "backends": backends}), ACCOUNT)


@pytest.mark.parametrize(
    "region, partition", [("us-east-1", "aws"), ("eu-central-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")]
)
def test_partition_follows_the_region(region: str, partition: str) -> None:
    assert aws_partition(region) == partition


def test_arns_use_the_partition_of_the_region() -> None:
    data = spec_named("tutorial").model_dump(mode="json", exclude_defaults=True)
    data["cluster"]["region"] = data["backends"]["aws_region"] = "us-gov-west-1"
    spec = parse_spec(data)
    policy = build_permission_policy(spec, ACCOUNT)
    assert all(arn.startswith("arn:aws-us-gov:") for arn in resources(policy))
    assert build_role_arns(spec, ACCOUNT) == {None: f"arn:aws-us-gov:iam::{ACCOUNT}:role/AirflowS3LoggerXComRole"}
    trust = build_irsa_trust_policy(spec, "https://oidc.eks.us-gov-west-1.amazonaws.com/id/ABC", ACCOUNT)
    assert trust["Statement"][0]["Principal"]["Federated"].startswith("arn:aws-us-gov:iam::")


def test_cluster_and_backends_in_different_partitions_are_refused() -> None:
    data = spec_named("tutorial").model_dump(mode="json", exclude_defaults=True)
    data["backends"]["aws_region"] = "cn-north-1"
    with pytest.raises(ConfigError, match="different AWS partitions"):
        build_role_arns(parse_spec(data), ACCOUNT)


def test_trust_policy_for_static_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="static"):
        build_irsa_trust_policy(spec_named("onprem"), ISSUER, ACCOUNT)


@pytest.mark.parametrize("issuer", ["http://oidc.example/id/1", "oidc.eks.us-east-1.amazonaws.com/id/X", "https://oidc.example/id/*"])
def test_a_malformed_oidc_issuer_is_refused(issuer: str) -> None:
    with pytest.raises(ConfigError, match="oidc_issuer"):
        build_irsa_trust_policy(spec_named("tutorial"), issuer, ACCOUNT)


@pytest.mark.parametrize("account", ["12345", "*", "12345678901a"])
def test_a_malformed_account_id_is_refused(account: str) -> None:
    with pytest.raises(ConfigError, match="12 digits"):
        build_permission_policy(spec_named("tutorial"), account)


@pytest.mark.parametrize(
    "build, service",
    [(build_eks_cluster_trust_policy, "eks.amazonaws.com"), (build_eks_node_trust_policy, "ec2.amazonaws.com")],
)
def test_eks_role_trust_names_the_service(build: Any, service: str) -> None:
    (statement,) = build(spec_named("tutorial"))["Statement"]
    assert statement == {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}


def test_eks_roles_get_the_aws_managed_policies() -> None:
    assert build_eks_managed_policy_arns(spec_named("tutorial")) == {
        "cluster": ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"],
        "node": [
            "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
            "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
            "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        ],
    }


KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_kms_keys_are_usable_only_through_their_service_and_only_by_components_that_need_them() -> None:
    spec = spec_named("multi-queue")
    backends = spec.backends.model_copy(update={
        "xcom": spec.backends.xcom.model_copy(update={"kms_key_arn": KMS}),
        "secrets": spec.backends.secrets.model_copy(update={"kms_key_arn": KMS}),
    })
    spec = spec.model_copy(update={"backends": backends})
    worker = build_permission_policy(spec, ACCOUNT, naming.WORKER)
    region = spec.backends.aws_region
    via_s3 = Request("kms:GenerateDataKey", KMS, context={"kms:ViaService": f"s3.{region}.amazonaws.com"})
    direct = Request("kms:Decrypt", KMS)
    via_secrets = Request("kms:Decrypt", KMS, context={"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"})
    assert evaluate([worker], via_s3) is Decision.ALLOW and evaluate([worker], via_secrets) is Decision.ALLOW
    assert evaluate([worker], direct) is Decision.IMPLICIT_DENY
    dag_processor = build_permission_policy(spec, ACCOUNT, naming.DAG_PROCESSOR)  # no XCom, no state
    assert evaluate([dag_processor], via_s3) is Decision.IMPLICIT_DENY
    assert evaluate([dag_processor], via_secrets) is Decision.ALLOW


def test_a_kms_alias_is_refused_with_the_fix() -> None:
    with pytest.raises(Exception, match="not a KMS key ARN"):
        XComBackendSpec(bucket="b-xcom", kms_key_arn="alias/agents")
