"""IAM policy documents: IRSA trust and permission policies, and the EKS cluster/node role trusts.

Least privilege by construction (docs/design.md, principle 6): trust names the exact ServiceAccounts with
`StringEquals` on `:sub` and `:aud`; permissions name the exact bucket prefixes and secret name
prefixes. The only wildcard is the trailing `/*` under a prefix the spec names; anything else is
refused. ARNs follow the partition of the region (aws, aws-cn, aws-us-gov).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.spec import EnvironmentSpec

POLICY_VERSION = "2012-10-17"
OBJECT_READ_WRITE = ["s3:GetObject", "s3:PutObject"]
OBJECT_DELETE = ["s3:DeleteObject"]
SECRET_READ = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
EKS_CLUSTER_MANAGED_POLICIES = ["AmazonEKSClusterPolicy"]
EKS_NODE_MANAGED_POLICIES = ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]
ACCOUNT_ID = re.compile(r"^\d{12}$")
SERVICE_ACCOUNT_SUBJECT = re.compile(r"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
OIDC_ISSUER = re.compile(r"^https://([a-z0-9.-]+(/[A-Za-z0-9._-]+)*)$")
# What each Airflow component touches (per_component roles). Workers run tasks: XCom, task state,
# task logs, connections/variables. The triggerer runs triggers: XCom, trigger logs, connections, and
# the state store, where asset watchers keep their asset-scoped state (common-io's
# StateStoreObjectStorageBackend writes AssetScope keys under `<state prefix>/assets/`). The Dag
# processor parses: connections/variables (git bundle credentials, top-level Variable reads) and its
# own logs, never XCom or state.
COMPONENT_NEEDS = {
    None: {"xcom", "state", "logs", "secrets"},
    naming.WORKER: {"xcom", "state", "logs", "secrets"},
    naming.TRIGGERER: {"xcom", "state", "logs", "secrets"},
    naming.DAG_PROCESSOR: {"logs", "secrets"},
}


def aws_partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def build_role_arns(spec: EnvironmentSpec, account_id: str) -> dict[str | None, str]:
    """ARN of each IRSA role (keys as in ``naming.irsa_role_names``), as `values.build_values` takes them."""
    partition = _iam_partition(spec)
    _check_account(account_id)
    return {
        component: f"arn:{partition}:iam::{account_id}:role/{name}"
        for component, name in naming.irsa_role_names(spec).items()
    }


def build_irsa_trust_policy(
    spec: EnvironmentSpec, oidc_issuer: str, account_id: str, component: str | None = None
) -> dict[str, Any]:
    """Trust of an IRSA role: only the component's ServiceAccounts, through the cluster's OIDC provider."""
    if not spec.irsa:
        raise ConfigError(["identity.mode: trust policies are for 'irsa'; static credentials use an IAM user"], spec.name)
    _check_account(account_id)
    match = OIDC_ISSUER.match(oidc_issuer)
    if not match:
        raise ConfigError(
            [f"oidc_issuer: got {oidc_issuer!r}; use the cluster's issuer URL like "
             "'https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE'"],
            spec.name,
        )
    return build_web_identity_trust_policy(
        oidc_issuer, account_id, naming.service_account_subjects(spec, component), _iam_partition(spec)
    )


def build_web_identity_trust_policy(
    oidc_issuer: str, account_id: str, subjects: list[str], partition: str = "aws"
) -> dict[str, Any]:
    """Trust of exactly these `system:serviceaccount:<ns>:<sa>` subjects through the OIDC provider.

    The spec-free core of ``build_irsa_trust_policy``, for operators that get the issuer and the
    subjects as plain arguments.
    """
    _check_account(account_id)
    match = OIDC_ISSUER.match(oidc_issuer)
    if not match:
        raise ConfigError(
            [f"oidc_issuer: got {oidc_issuer!r}; use the cluster's issuer URL like "
             "'https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE'"]
        )
    bad = [s for s in subjects if not SERVICE_ACCOUNT_SUBJECT.match(s)]
    if not subjects or bad:
        raise ConfigError(
            [f"service_account_subjects: got {bad or subjects!r}; name each ServiceAccount exactly, "
             "as 'system:serviceaccount:<namespace>:<name>' (no wildcards)"]
        )
    issuer = match.group(1)
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:{partition}:iam::{account_id}:oidc-provider/{issuer}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{issuer}:sub": list(subjects), f"{issuer}:aud": "sts.amazonaws.com"}},
            }
        ],
    }


def trust_policy_problems(policy: dict[str, Any]) -> list[str]:
    """Why a trust policy is too broad: a wildcard principal, or web identity without an exact `:sub`."""
    problems = []
    for index, statement in enumerate(_as_list(policy.get("Statement"))):
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        values = [principal] if isinstance(principal, str) else [
            value for entry in (principal or {}).values() for value in _as_list(entry)
        ]
        if "NotPrincipal" in statement or any("*" in str(value) for value in values):
            problems.append(f"Statement[{index}]: a wildcard principal lets anyone assume the role; name the principal")
        actions = _as_list(statement.get("Action"))
        if any(action in ("sts:AssumeRoleWithWebIdentity", "sts:*", "*") for action in actions):
            exact = statement.get("Condition", {}).get("StringEquals", {})
            subjects = [v for key, value in exact.items() if key.endswith(":sub") for v in _as_list(value)]
            if not subjects or any("*" in subject or "?" in subject for subject in subjects):
                problems.append(
                    f"Statement[{index}]: sts:AssumeRoleWithWebIdentity without a StringEquals ':sub' condition "
                    "naming exact ServiceAccounts lets any ServiceAccount of the cluster assume the role"
                )
    return problems


def normalize_policy(document: dict[str, Any] | str) -> dict[str, Any]:
    """A policy in a canonical form, so two documents IAM treats alike compare equal.

    IAM returns documents URL-encoded (boto3 usually decodes them), may reorder them, and treats
    a one-element list like its single value; statements and list values are therefore sorted.
    """
    if isinstance(document, str):
        document = json.loads(unquote(document))
    return _canonical(document)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        if len(items) == 1 and not isinstance(items[0], dict):
            return items[0]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def build_permission_policy(spec: EnvironmentSpec, account_id: str, component: str | None = None) -> dict[str, Any]:
    """S3 and Secrets Manager access for one IRSA role (or the on-prem IAM user when component is None)."""
    if component not in COMPONENT_NEEDS:
        raise ConfigError([f"component: got {component!r}; use one of {sorted(str(c) for c in COMPONENT_NEEDS)}"], spec.name)
    _check_account(account_id)
    needs = COMPONENT_NEEDS[component]
    backends = spec.backends
    partition = aws_partition(backends.aws_region)
    read_write: list[tuple[str, str]] = []
    deletable: list[tuple[str, str]] = []
    if "xcom" in needs:
        deletable.append((backends.xcom.bucket, backends.xcom.prefix))
    if "state" in needs and spec.state_store:
        deletable.append((backends.xcom.bucket, spec.state_store.prefix))
    if "logs" in needs:
        # Task logs are written (and re-read to append) but never deleted by the agents.
        read_write.append((backends.logs.bucket, backends.logs.prefix))
    statements: list[dict[str, Any]] = []
    if deletable:
        statements.append(_object_statement("ObjectsReadWriteDelete", OBJECT_READ_WRITE + OBJECT_DELETE, deletable, partition))
    if read_write:
        statements.append(_object_statement("ObjectsReadWrite", OBJECT_READ_WRITE, read_write, partition))
    statements.extend(_list_bucket_statements(deletable + read_write, partition))
    if "secrets" in needs:
        prefixes = [backends.secrets.connections_prefix, backends.secrets.variables_prefix]
        statements.append(
            {
                "Sid": "ReadSecrets",
                "Effect": "Allow",
                "Action": SECRET_READ,
                "Resource": [
                    f"arn:{partition}:secretsmanager:{backends.aws_region}:{account_id}:secret:{prefix}/*"
                    for prefix in prefixes
                ],
            }
        )
    statements.extend(_kms_statements(spec, needs))
    policy = {"Version": POLICY_VERSION, "Statement": statements}
    _refuse_wildcards(spec, policy)
    return policy


def _kms_statements(spec: EnvironmentSpec, needs: set[str]) -> list[dict[str, Any]]:
    """Use of the spec's KMS keys, only through the service that encrypts with them (``kms:ViaService``).

    SSE-KMS writes need kms:GenerateDataKey and reads kms:Decrypt
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms);
    reading a secret under a customer managed key needs kms:Decrypt
    (https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html).
    """
    backends = spec.backends
    region = backends.aws_region
    s3_keys = {key for need, key in (("xcom", backends.xcom.kms_key_arn), ("state", backends.xcom.kms_key_arn),
                                     ("logs", backends.logs.kms_key_arn)) if need in needs and key}
    statements = []
    if s3_keys:
        statements.append({"Sid": "UseBucketKeys", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                           "Resource": sorted(s3_keys),
                           "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}})
    if "secrets" in needs and backends.secrets.kms_key_arn:
        statements.append({"Sid": "UseSecretsKey", "Effect": "Allow", "Action": ["kms:Decrypt"],
                           "Resource": [backends.secrets.kms_key_arn],
                           "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}})
    return statements


def build_irsa_policies(spec: EnvironmentSpec, oidc_issuer: str, account_id: str) -> dict[str | None, dict[str, Any]]:
    """Per IRSA role (keys as in ``naming.irsa_role_names``): its name, trust and permission policy."""
    return {
        component: {
            "role_name": role_name,
            "policy_name": naming.IRSA_POLICY_NAME,
            "trust_policy": build_irsa_trust_policy(spec, oidc_issuer, account_id, component),
            "permission_policy": build_permission_policy(spec, account_id, component),
        }
        for component, role_name in naming.irsa_role_names(spec).items()
    }


def build_eks_cluster_trust_policy(spec: EnvironmentSpec) -> dict[str, Any]:
    return _service_trust("eks.amazonaws.com")


def build_eks_node_trust_policy(spec: EnvironmentSpec) -> dict[str, Any]:
    # EC2's service principal carries the China domain in aws-cn; EKS's does not.
    service = "ec2.amazonaws.com.cn" if _iam_partition(spec) == "aws-cn" else "ec2.amazonaws.com"
    return _service_trust(service)


def build_eks_managed_policy_arns(spec: EnvironmentSpec) -> dict[str, list[str]]:
    """AWS managed policies to attach to the EKS cluster role and node role."""
    partition = _iam_partition(spec)
    return {
        "cluster": [f"arn:{partition}:iam::aws:policy/{name}" for name in EKS_CLUSTER_MANAGED_POLICIES],
        "node": [f"arn:{partition}:iam::aws:policy/{name}" for name in EKS_NODE_MANAGED_POLICIES],
    }


def _service_trust(service: str) -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def _object_statement(sid: str, actions: list[str], locations: list[tuple[str, str]], partition: str) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": sorted({f"arn:{partition}:s3:::{bucket}/{prefix}/*" for bucket, prefix in locations}),
    }


def _list_bucket_statements(locations: list[tuple[str, str]], partition: str) -> list[dict[str, Any]]:
    """s3:ListBucket on each bucket, with no ``s3:prefix`` condition.

    s3fs checks the bucket with HeadBucket before the XCom backend, the state store or the log handler
    writes (``mkdir`` of the parent path). AWS authorizes HeadBucket as s3:ListBucket and the request
    carries no ``s3:prefix``, so a ``StringLike s3:prefix`` grant is false for it and the write fails
    with 403 (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html). ``StringLikeIfExists``
    would let HeadBucket through, but also every listing that names no prefix, so it narrows nothing.
    Object access stays limited to the prefixes; listing reveals key names, never contents.
    """
    buckets = sorted({bucket for bucket, _ in locations})
    return [{"Sid": "CheckAndListBuckets", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": [f"arn:{partition}:s3:::{bucket}" for bucket in buckets]}]


def _refuse_wildcards(spec: EnvironmentSpec, policy: dict[str, Any]) -> None:
    """Only a trailing `/*` under a named prefix may match more than one name."""
    problems = []
    for statement in policy["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        values = [*resources, *statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])]
        for value in values:
            head = value[:-2] if value.endswith("/*") else value
            if "*" in head or "?" in head:
                problems.append(f"{statement['Sid']}: '{value}' has a wildcard the spec did not ask for")
    if problems:
        raise ConfigError(problems, spec.name)


def _iam_partition(spec: EnvironmentSpec) -> str:
    """IAM lives in the partition of the cluster (or, on-prem, of the backends); both must agree."""
    backends_partition = aws_partition(spec.backends.aws_region)
    eks = spec.eks
    if eks and aws_partition(eks.region) != backends_partition:
        raise ConfigError(
            [f"cluster.region '{eks.region}' and backends.aws_region '{spec.backends.aws_region}' are in different "
             "AWS partitions; IRSA roles cannot reach across them — keep both in one partition"],
            spec.name,
        )
    return backends_partition


def _check_account(account_id: str) -> None:
    if not ACCOUNT_ID.match(account_id):
        raise ConfigError([f"account_id: got {account_id!r}; an AWS account id is 12 digits"])


# -- the management Deployment's own policy -------------------------------------------------------

OWNERSHIP_TAG = "remote-agents:environment"
EKS_ROLE_ACTIONS = [
    "iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:UpdateAssumeRolePolicy", "iam:DeleteRole",
    "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
    "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole",
]
OIDC_PROVIDER_ACTIONS = [
    "iam:GetOpenIDConnectProvider", "iam:CreateOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
    "iam:AddClientIDToOpenIDConnectProvider", "iam:UpdateOpenIDConnectProviderThumbprint",
    "iam:DeleteOpenIDConnectProvider",
]
# EC2 resource types of the VPC plan, as they appear in ARNs and in TagSpecifications.
VPC_RESOURCE_TYPES = ["vpc", "subnet", "internet-gateway", "natgateway", "route-table", "elastic-ip"]
VPC_CREATE_ACTIONS = [
    "ec2:CreateVpc", "ec2:CreateSubnet", "ec2:CreateInternetGateway", "ec2:AllocateAddress",
    "ec2:CreateNatGateway", "ec2:CreateRouteTable",
]
VPC_OWNED_ACTIONS = [
    "ec2:DescribeVpcAttribute", "ec2:ModifyVpcAttribute", "ec2:ModifySubnetAttribute",
    "ec2:AttachInternetGateway", "ec2:DetachInternetGateway", "ec2:CreateRoute", "ec2:ReplaceRoute",
    "ec2:AssociateRouteTable", "ec2:DisassociateRouteTable",
    # Creating a subnet, route table or NAT gateway also authorizes the VPC / subnet / address it goes into.
    "ec2:CreateSubnet", "ec2:CreateRouteTable", "ec2:CreateNatGateway",
    "ec2:DeleteNatGateway", "ec2:ReleaseAddress", "ec2:DeleteRouteTable", "ec2:DeleteInternetGateway",
    "ec2:DeleteSubnet", "ec2:DeleteVpc",
]
# EC2 has no resource-level permissions for Describe* calls: they can only be granted on "*".
VPC_DESCRIBE_ACTIONS = [
    "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInternetGateways", "ec2:DescribeNatGateways",
    "ec2:DescribeRouteTables", "ec2:DescribeAddresses",
]
EKS_SERVICE_LINKED_ROLES = {"eks.amazonaws.com": "AWSServiceRoleForAmazonEKS",
                            "eks-nodegroup.amazonaws.com": "AWSServiceRoleForAmazonEKSNodegroup"}


def build_management_policy(spec: EnvironmentSpec, account_id: str) -> dict[str, Any]:
    """The least-privilege identity policy of the management Deployment's AWS connection for this spec.

    It covers what the bootstrap, health and teardown Dags call, nothing else:

    - STS ``GetCallerIdentity`` (IAM ARNs are built from the account it returns);
    - EKS on the spec's cluster and its node groups only; ``iam:PassRole`` only for the EKS roles,
      only to ``eks.amazonaws.com``; the EKS service-linked roles, created by AWS on the first cluster;
    - IAM on the role names of ``naming.irsa_role_names`` and ``naming.eks_role_names``, and on the
      region's EKS OIDC providers. IAM cannot scope ``PutRolePolicy`` to an inline policy name: the
      role ARN is the narrowest resource, and only our roles are named. Managed policies may be
      attached (and detached) only if they are the EKS ones (``iam:PolicyARN``);
    - EC2 for the VPC (only when the spec names no subnets). EC2 cannot resource-scope ``Create*`` to
      ids that do not exist yet, so creates are allowed on the new resource's type only when the
      request tags it with ``remote-agents:environment: <name>`` (``aws:RequestTag``), tagging only
      as part of those creates (``ec2:CreateAction``), and every modify, attach, route and delete only
      on resources carrying that tag (``ec2:ResourceTag``): someone else's VPC cannot be touched.
      ``Describe*`` has no resource-level permissions in EC2 and is granted on ``*``;
    - S3 read of the XCom and log prefixes, and Secrets Manager for the health check's canary
      secrets under the spec's connections and variables prefixes.

    For ``cluster.kind: existing`` only the S3 and Secrets Manager parts remain: nothing else of AWS
    is called.
    """
    _check_account(account_id)
    partition = _iam_partition(spec)
    statements: list[dict[str, Any]] = []
    eks = spec.eks
    if eks:
        statements.append(_statement("ReadCallerIdentity", ["sts:GetCallerIdentity"], "*"))
        statements.extend(_eks_statements(spec, account_id, partition))
        statements.extend(_iam_statements(spec, account_id, partition))
        if not eks.subnet_ids:
            statements.extend(_vpc_statements(spec, account_id, partition))
    statements.extend(_health_statements(spec, account_id))
    return {"Version": POLICY_VERSION, "Statement": statements}


def _statement(sid: str, actions: list[str], resources: list[str] | str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _eks_statements(spec: EnvironmentSpec, account_id: str, partition: str) -> list[dict[str, Any]]:
    eks = spec.eks
    assert eks is not None
    cluster_arn = f"arn:{partition}:eks:{eks.region}:{account_id}:cluster/{eks.name}"
    # Node group ARNs end in a generated id; any node group of our cluster (teardown deletes them all).
    nodegroups_arn = f"arn:{partition}:eks:{eks.region}:{account_id}:nodegroup/{eks.name}/*/*"
    tagged_on_create = {"StringEquals": {f"aws:RequestTag/{OWNERSHIP_TAG}": spec.name}}
    names = naming.eks_role_names(spec)
    passed = [eks.cluster_role_arn or f"arn:{partition}:iam::{account_id}:role/{names['cluster']}",
              eks.node_role_arn or f"arn:{partition}:iam::{account_id}:role/{names['node']}"]
    return [
        # CreateCluster has no resource-level permission (its cluster does not exist yet): the tag
        # condition is what keeps it to our clusters.
        _statement("EksCreateTaggedCluster", ["eks:CreateCluster"], "*", tagged_on_create),
        _statement("EksCreateTaggedNodegroups", ["eks:CreateNodegroup", "eks:TagResource"], [cluster_arn, nodegroups_arn],
                   tagged_on_create),
        _statement("EksCluster", ["eks:DescribeCluster", "eks:ListNodegroups", "eks:DeleteCluster"], cluster_arn),
        _statement("EksNodegroups", ["eks:DescribeNodegroup", "eks:DeleteNodegroup"], nodegroups_arn),
        _statement("PassEksRoles", ["iam:PassRole"], sorted(set(passed)),
                   {"StringEquals": {"iam:PassedToService": "eks.amazonaws.com"}}),
        _statement(
            "EksServiceLinkedRoles", ["iam:CreateServiceLinkedRole"],
            [f"arn:{partition}:iam::{account_id}:role/aws-service-role/{service}/{role}"
             for service, role in sorted(EKS_SERVICE_LINKED_ROLES.items())],
            {"StringEquals": {"iam:AWSServiceName": sorted(EKS_SERVICE_LINKED_ROLES)}},
        ),
    ]


def _iam_statements(spec: EnvironmentSpec, account_id: str, partition: str) -> list[dict[str, Any]]:
    eks = spec.eks
    assert eks is not None
    role_arn = f"arn:{partition}:iam::{account_id}:role/{{}}".format
    eks_names = naming.eks_role_names(spec)
    # Roles given as ARNs in the spec are used as they are, never created or changed.
    eks_roles = [role_arn(eks_names[kind]) for kind, given in (("cluster", eks.cluster_role_arn), ("node", eks.node_role_arn)) if not given]
    roles = sorted({*(role_arn(name) for name in naming.irsa_role_names(spec).values()), *eks_roles})
    statements = [
        _statement("ManageOurRoles", EKS_ROLE_ACTIONS, roles),
        _statement("ListOidcProviders", ["iam:ListOpenIDConnectProviders"], "*"),
        _statement("ManageEksOidcProvider", OIDC_PROVIDER_ACTIONS,
                   f"arn:{partition}:iam::{account_id}:oidc-provider/oidc.eks.{eks.region}.amazonaws.com/id/*"),
    ]
    if eks_roles:
        statements.append(_statement(
            "AttachEksManagedPolicies", ["iam:AttachRolePolicy", "iam:DetachRolePolicy"], sorted(eks_roles),
            {"ArnEquals": {"iam:PolicyARN": sorted(arn for arns in build_eks_managed_policy_arns(spec).values() for arn in arns)}},
        ))
        # EKS makes an instance profile for a managed node group's role; teardown takes the role out of it.
        statements.append(_statement("DetachNodeRoleFromInstanceProfiles", ["iam:RemoveRoleFromInstanceProfile"],
                                     f"arn:{partition}:iam::{account_id}:instance-profile/*"))
    return statements


def _vpc_statements(spec: EnvironmentSpec, account_id: str, partition: str) -> list[dict[str, Any]]:
    eks = spec.eks
    assert eks is not None
    arns = [f"arn:{partition}:ec2:{eks.region}:{account_id}:{kind}/*" for kind in VPC_RESOURCE_TYPES]
    return [
        _statement("VpcDescribe", VPC_DESCRIBE_ACTIONS, "*"),
        _statement("VpcCreateTagged", VPC_CREATE_ACTIONS, arns, {"StringEquals": {f"aws:RequestTag/{OWNERSHIP_TAG}": spec.name}}),
        _statement("VpcTagOnCreateOnly", ["ec2:CreateTags"], arns,
                   {"StringEquals": {"ec2:CreateAction": sorted(a.split(":", 1)[1] for a in VPC_CREATE_ACTIONS)}}),
        _statement("VpcChangeOwned", VPC_OWNED_ACTIONS, arns, {"StringEquals": {f"ec2:ResourceTag/{OWNERSHIP_TAG}": spec.name}}),
    ]


def _health_statements(spec: EnvironmentSpec, account_id: str) -> list[dict[str, Any]]:
    # Imported here: the health package is the one source of the canary's name, and only this builder needs it.
    from remote_agents.health.contract import canary_name

    backends = spec.backends
    partition = aws_partition(backends.aws_region)
    locations = sorted({(backends.xcom.bucket, backends.xcom.prefix), (backends.logs.bucket, backends.logs.prefix)})
    secrets = backends.secrets
    # An existing secret's ARN ends in '-' and six random characters, which '?' matches one each, so
    # another environment's canary (whose name may start with this one's) is not matched; the bare
    # name is the resource of a call naming a secret that does not exist yet.
    canaries = [
        f"arn:{partition}:secretsmanager:{backends.aws_region}:{account_id}:secret:{prefix}/{canary_name(spec.name)}{suffix}"
        for prefix in sorted({secrets.connections_prefix, secrets.variables_prefix}) for suffix in ("", "-??????")
    ]
    return [
        _statement("HealthReadAgentObjects", ["s3:GetObject"], [f"arn:{partition}:s3:::{b}/{p}/*" for b, p in locations]),
        # No s3:prefix condition: the bucket check (HeadBucket) and HeadObject's 404-for-missing both
        # rest on a ListBucket that carries no prefix. It reveals key names, not contents.
        _statement("HealthCheckBuckets", ["s3:ListBucket"], sorted({f"arn:{partition}:s3:::{b}" for b, _ in locations})),
        _statement("HealthWriteCanary", ["secretsmanager:DescribeSecret", "secretsmanager:CreateSecret",
                                         "secretsmanager:PutSecretValue", "secretsmanager:TagResource"], canaries),
        _statement("TeardownDeleteCanary", ["secretsmanager:DeleteSecret"], canaries),
    ]
