"""The sandbox's IAM evaluator, case by case from the examples in AWS's IAM documentation.

Each case names the page its policy and its expected decision come from.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.iam_policy import Decision, Request, evaluate

OPERATORS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html"
MULTIVALUED = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html"
LOGIC = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html"
S3_KEYS = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html"
S3_ACTIONS = "https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html"
IRSA = "https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html"
ALLOW, DENY, IMPLICIT = Decision.ALLOW, Decision.EXPLICIT_DENY, Decision.IMPLICIT_DENY
BUCKET = "arn:aws:s3:::amzn-s3-demo-bucket"


def allow(action: Any, resource: Any = "*", condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Action": action, "Resource": resource, **extra}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def deny(action: Any, resource: Any = "*", condition: dict[str, Any] | None = None) -> dict[str, Any]:
    policy = allow(action, resource, condition)
    policy["Statement"][0]["Effect"] = "Deny"
    return policy


PREFIX_LISTING = allow("s3:ListBucket", BUCKET, {"StringLike": {"s3:prefix": ["xcom/*"]}})
IRSA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.region-code.amazonaws.com/id/EXAMPLE"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            "oidc.eks.region-code.amazonaws.com/id/EXAMPLE:sub": "system:serviceaccount:default:my-service-account",
            "oidc.eks.region-code.amazonaws.com/id/EXAMPLE:aud": "sts.amazonaws.com",
        }},
    }],
}
PROVIDER = {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.region-code.amazonaws.com/id/EXAMPLE"}


def token(sub: str, aud: str = "sts.amazonaws.com") -> dict[str, str]:
    return {"oidc.eks.region-code.amazonaws.com/id/EXAMPLE:sub": sub, "oidc.eks.region-code.amazonaws.com/id/EXAMPLE:aud": aud}


CASES = [
    # source, policies, request, decision
    ("listing under the allowed prefix", S3_KEYS, [PREFIX_LISTING],
     Request("s3:ListBucket", BUCKET, context={"s3:prefix": "xcom/run-1/"}), ALLOW),
    ("listing another prefix", S3_KEYS, [PREFIX_LISTING],
     Request("s3:ListBucket", BUCKET, context={"s3:prefix": "private/"}), IMPLICIT),
    # HeadBucket is authorized as s3:ListBucket and carries no s3:prefix: the condition is false.
    ("HeadBucket under a prefix-conditioned ListBucket", S3_ACTIONS, [PREFIX_LISTING],
     Request("s3:ListBucket", BUCKET), IMPLICIT),
    ("StringLikeIfExists lets an absent key through", OPERATORS,
     [allow("s3:ListBucket", BUCKET, {"StringLikeIfExists": {"s3:prefix": ["xcom/*"]}})],
     Request("s3:ListBucket", BUCKET), ALLOW),
    ("negated operator with the key absent is true", OPERATORS,
     [allow("s3:ListBucket", BUCKET, {"StringNotLike": {"s3:prefix": ["private/*"]}})],
     Request("s3:ListBucket", BUCKET), ALLOW),
    ("negated operator with a matching value is false", OPERATORS,
     [allow("s3:ListBucket", BUCKET, {"StringNotLike": {"s3:prefix": ["private/*"]}})],
     Request("s3:ListBucket", BUCKET, context={"s3:prefix": "private/a"}), IMPLICIT),
    ("Null true matches an absent key", OPERATORS,
     [allow("ec2:RunInstances", "*", {"Null": {"aws:TokenIssueTime": "true"}})],
     Request("ec2:RunInstances"), ALLOW),
    ("Null false needs the key", OPERATORS,
     [allow("ec2:RunInstances", "*", {"Null": {"aws:TokenIssueTime": "false"}})],
     Request("ec2:RunInstances"), IMPLICIT),
    ("values of one key are OR-ed", OPERATORS,
     [allow("iam:CreateRole", "*", {"StringEquals": {"aws:RequestTag/team": ["a", "b"]}})],
     Request("iam:CreateRole", context={"aws:RequestTag/team": "b"}), ALLOW),
    ("keys and operators are AND-ed", OPERATORS,
     [allow("iam:CreateRole", "*", {"StringEquals": {"aws:RequestTag/team": "a", "aws:RequestTag/env": "prod"}})],
     Request("iam:CreateRole", context={"aws:RequestTag/team": "a", "aws:RequestTag/env": "dev"}), IMPLICIT),
    ("context keys match case-insensitively", OPERATORS,
     [allow("iam:CreateRole", "*", {"StringEquals": {"aws:RequestTag/Team": "a"}})],
     Request("iam:CreateRole", context={"AWS:RequestTag/Team": "a"}), ALLOW),
    ("ForAllValues: every tag key in the list", MULTIVALUED,
     [allow("ec2:CreateTags", "*", {"ForAllValues:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}})],
     Request("ec2:CreateTags", context={"aws:TagKeys": ["environment", "owner"]}), IMPLICIT),
    ("ForAllValues: an absent key is true", MULTIVALUED,
     [allow("ec2:CreateTags", "*", {"ForAllValues:StringEquals": {"aws:TagKeys": ["environment"]}})],
     Request("ec2:CreateTags"), ALLOW),
    ("ForAnyValue: one tag key is enough", MULTIVALUED,
     [allow("ec2:CreateTags", "*", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment"]}})],
     Request("ec2:CreateTags", context={"aws:TagKeys": ["owner", "environment"]}), ALLOW),
    ("ForAnyValue: an absent key is false", MULTIVALUED,
     [allow("ec2:CreateTags", "*", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment"]}})],
     Request("ec2:CreateTags"), IMPLICIT),
    ("Bool on aws:SecureTransport", OPERATORS,
     [deny("s3:*", "*", {"Bool": {"aws:SecureTransport": "false"}}), allow("s3:GetObject", f"{BUCKET}/*")],
     Request("s3:GetObject", f"{BUCKET}/a", context={"aws:SecureTransport": "false"}), DENY),
    ("NumericLessThanEquals on s3:max-keys", OPERATORS,
     [allow("s3:ListBucket", BUCKET, {"NumericLessThanEquals": {"s3:max-keys": "10"}})],
     Request("s3:ListBucket", BUCKET, context={"s3:max-keys": "1000"}), IMPLICIT),
    ("DateLessThan on aws:CurrentTime", OPERATORS,
     [allow("iam:*", "*", {"DateLessThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"}})],
     Request("iam:ListRoles", context={"aws:CurrentTime": "2026-12-02T12:00:00Z"}), IMPLICIT),
    ("IpAddress with a CIDR", OPERATORS,
     [allow("s3:GetObject", "*", {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}})],
     Request("s3:GetObject", f"{BUCKET}/a", context={"aws:SourceIp": "203.0.113.7"}), ALLOW),
    ("NotIpAddress outside the range", OPERATORS,
     [allow("s3:GetObject", "*", {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}})],
     Request("s3:GetObject", f"{BUCKET}/a", context={"aws:SourceIp": "198.51.100.1"}), ALLOW),
    ("ArnLike on iam:PassedToService's role", OPERATORS,
     [allow("iam:PassRole", "*", {"ArnLike": {"aws:SourceArn": "arn:aws:eks:*:111122223333:cluster/*"}})],
     Request("iam:PassRole", context={"aws:SourceArn": "arn:aws:eks:us-east-1:111122223333:cluster/c1"}), ALLOW),
    ("StringEquals on iam:PassedToService", OPERATORS,
     [allow("iam:PassRole", "arn:aws:iam::111122223333:role/eks-*",
            {"StringEquals": {"iam:PassedToService": "eks.amazonaws.com"}})],
     Request("iam:PassRole", "arn:aws:iam::111122223333:role/eks-cluster",
             context={"iam:PassedToService": "ec2.amazonaws.com"}), IMPLICIT),
    ("explicit deny wins over allow", LOGIC, [allow("s3:*", "*"), deny("s3:DeleteObject", f"{BUCKET}/*")],
     Request("s3:DeleteObject", f"{BUCKET}/a"), DENY),
    ("nothing allows: implicit deny", LOGIC, [allow("s3:GetObject", f"{BUCKET}/*")],
     Request("s3:PutObject", f"{BUCKET}/a"), IMPLICIT),
    ("a failed condition on an Allow is no deny", LOGIC,
     [allow("s3:ListBucket", BUCKET, {"StringLike": {"s3:prefix": "xcom/*"}}), allow("s3:ListBucket", BUCKET)],
     Request("s3:ListBucket", BUCKET), ALLOW),
    ("actions match case-insensitively with wildcards", LOGIC, [allow("S3:Get*", f"{BUCKET}/*")],
     Request("s3:GetObject", f"{BUCKET}/a"), ALLOW),
    ("NotAction", LOGIC, [{"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}}],
     Request("iam:CreateRole"), IMPLICIT),
    ("NotResource", LOGIC,
     [{"Statement": {"Effect": "Allow", "Action": "s3:*", "NotResource": f"{BUCKET}/private/*"}}],
     Request("s3:GetObject", f"{BUCKET}/private/a"), IMPLICIT),
    ("policy variable from the context", OPERATORS,
     [allow("s3:ListBucket", BUCKET, {"StringLike": {"s3:prefix": ["home/${aws:username}/*"]}})],
     Request("s3:ListBucket", BUCKET, context={"s3:prefix": "home/alice/a", "aws:username": "alice"}), ALLOW),
    ("IRSA trust for the named ServiceAccount", IRSA, [IRSA_TRUST],
     Request("sts:AssumeRoleWithWebIdentity", principal=PROVIDER,
             context=token("system:serviceaccount:default:my-service-account")), ALLOW),
    ("IRSA trust refuses another ServiceAccount", IRSA, [IRSA_TRUST],
     Request("sts:AssumeRoleWithWebIdentity", principal=PROVIDER,
             context=token("system:serviceaccount:default:other")), IMPLICIT),
    ("IRSA trust refuses another audience", IRSA, [IRSA_TRUST],
     Request("sts:AssumeRoleWithWebIdentity", principal=PROVIDER,
             context=token("system:serviceaccount:default:my-service-account", aud="other")), IMPLICIT),
    ("IRSA trust refuses another identity provider", IRSA, [IRSA_TRUST],
     Request("sts:AssumeRoleWithWebIdentity", principal={"Federated": "arn:aws:iam::111122223333:oidc-provider/other"},
             context=token("system:serviceaccount:default:my-service-account")), IMPLICIT),
    ("an account id as principal stands for its principals", LOGIC,
     [{"Statement": {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "sts:AssumeRole"}}],
     Request("sts:AssumeRole", principal={"AWS": "arn:aws:iam::111122223333:user/alice"}), ALLOW),
]


@pytest.mark.parametrize(("name", "source", "policies", "request_", "decision"), CASES, ids=[c[0] for c in CASES])
def test_decision_matches_aws_documentation(name: str, source: str, policies: list[dict[str, Any]],
                                             request_: Request, decision: Decision) -> None:
    assert source.startswith("https://docs.aws.amazon.com/")
    assert evaluate(policies, request_) == decision


@pytest.mark.parametrize("context", [{"s3:prefix": "a"}, {}], ids=["key present", "key absent"])
def test_an_unknown_operator_is_an_error_not_a_match(context: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="StringEqualz"):
        evaluate([allow("s3:*", "*", {"StringEqualz": {"s3:prefix": "a"}})], Request("s3:ListBucket", BUCKET,
                                                                                     context=context))
