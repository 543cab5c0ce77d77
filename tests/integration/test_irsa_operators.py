"""EnsureOidcProviderOperator and EnsureIrsaRoleOperator against the sandbox's moto."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import parliament
import pytest
from botocore.exceptions import ClientError

from remote_agents import naming
from remote_agents.errors import AwsError, AwsPermissionError, AwsQuotaError, ConfigError
from remote_agents.hooks.aws import aws_error
from remote_agents.operators.irsa import EnsureIrsaRoleOperator, EnsureOidcProviderOperator
from remote_agents.render.policies import build_permission_policy
from sandbox.environment import Sandbox

ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
ISSUER_HOST = ISSUER.removeprefix("https://")
ROLE = "sandbox-remote-agents"
READ_ONLY = ("Describe", "List", "Get")
# parliament lints identity policies; on a trust policy it always reports these two (see
# tests/unit/test_render_policies.py): no Resource element, and OIDC unknown as a federation source.
TRUST_POLICY_FALSE_POSITIVES = {"MALFORMED", "UNKNOWN_FEDERATION_SOURCE"}


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox


def role_op(sandbox: Sandbox, **overrides: Any) -> EnsureIrsaRoleOperator:
    kwargs = {
        "role_name": ROLE,
        "oidc_issuer": ISSUER,
        "service_account_subjects": naming.service_account_subjects(sandbox.spec),
        "permission_policy": build_permission_policy(sandbox.spec, sandbox.aws.account_id),
        "tags": naming.ownership_tags(sandbox.spec),
        **overrides,
    }
    return EnsureIrsaRoleOperator(task_id="irsa_role", **kwargs)


def oidc_op(sandbox: Sandbox, **overrides: Any) -> EnsureOidcProviderOperator:
    return EnsureOidcProviderOperator(task_id="oidc", oidc_issuer=ISSUER, tags=naming.ownership_tags(sandbox.spec), **overrides)


def record_mutations(op: Any) -> list[str]:
    calls: list[str] = []
    op.iam_hook.conn.meta.events.register(
        "before-call", lambda model, **_: None if model.name.startswith(READ_ONLY) else calls.append(model.name)
    )
    return calls


def change(result: dict[str, Any], resource: str) -> dict[str, Any]:
    return next(c for c in result["changes"] if c["resource"] == resource)


def stored_trust(sandbox: Sandbox) -> dict[str, Any]:
    return dict(sandbox.aws.admin_client("iam").get_role(RoleName=ROLE)["Role"]["AssumeRolePolicyDocument"])


def test_oidc_provider_is_created_with_the_sts_audience(clean: Sandbox) -> None:
    result = oidc_op(clean).execute({})

    provider = clean.aws.admin_client("iam").get_open_id_connect_provider(OpenIDConnectProviderArn=result["oidc_provider_arn"])
    assert result["changes"][0]["action"] == "created"
    assert provider["ClientIDList"] == ["sts.amazonaws.com"]
    assert result["oidc_provider_arn"].endswith(f":oidc-provider/{ISSUER_HOST}")


def test_oidc_provider_second_run_makes_no_mutating_calls(clean: Sandbox) -> None:
    oidc_op(clean).execute({})
    clean.aws.request_log.clear()
    op = oidc_op(clean)
    mutations = record_mutations(op)

    result = op.execute({})

    assert (mutations, clean.aws.request_log.mutating_calls) == ([], [])
    assert result["changes"][0]["action"] == "unchanged"
    assert len(clean.aws.admin_client("iam").list_open_id_connect_providers()["OpenIDConnectProviderList"]) == 1


def test_irsa_role_is_created_with_its_inline_policy_and_tags(clean: Sandbox) -> None:
    result = role_op(clean).execute({})

    iam = clean.aws.admin_client("iam")
    role = iam.get_role(RoleName=ROLE)["Role"]
    assert result["role_arn"] == role["Arn"]
    assert {t["Key"]: t["Value"] for t in role["Tags"]} == naming.ownership_tags(clean.spec)
    policy = iam.get_role_policy(RoleName=ROLE, PolicyName=naming.IRSA_POLICY_NAME)["PolicyDocument"]
    assert policy == build_permission_policy(clean.spec, clean.aws.account_id)


def test_irsa_role_second_run_makes_no_mutating_calls_and_reports_unchanged(clean: Sandbox) -> None:
    role_op(clean).execute({})
    clean.aws.request_log.clear()
    op = role_op(clean)
    mutations = record_mutations(op)

    result = op.execute({})

    assert (mutations, clean.aws.request_log.mutating_calls) == ([], [])
    assert {c["action"] for c in result["changes"]} == {"unchanged"}


def test_a_role_another_environment_owns_is_refused_and_left_as_it_is(clean: Sandbox) -> None:
    role_op(clean).execute({})
    clean.aws.request_log.clear()
    theirs = {**naming.ownership_tags(clean.spec), "remote-agents:environment": "prod-b"}

    with pytest.raises(AwsError, match=r"belongs to another remote-agents environment \(remote-agents:environment="
                                       r"sandbox\).*its own identity.role_name"):
        role_op(clean, tags=theirs, service_account_subjects=["system:serviceaccount:other:sa"]).execute({})

    assert clean.aws.request_log.mutating_calls == []
    tags = clean.aws.admin_client("iam").get_role(RoleName=ROLE)["Role"]["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == naming.ownership_tags(clean.spec)


def test_policies_are_compared_regardless_of_order(clean: Sandbox) -> None:
    role_op(clean).execute({})
    policy = build_permission_policy(clean.spec, clean.aws.account_id)
    reordered = {**policy, "Statement": [{**s, "Resource": s["Resource"][::-1] if isinstance(s["Resource"], list) else s["Resource"]}
                                         for s in policy["Statement"][::-1]]}
    subjects = naming.service_account_subjects(clean.spec)[::-1]

    result = role_op(clean, permission_policy=reordered, service_account_subjects=subjects).execute({})

    assert {c["action"] for c in result["changes"]} == {"unchanged"}


def test_an_extra_service_account_updates_the_trust_with_a_diff(clean: Sandbox) -> None:
    role_op(clean).execute({})
    subjects = [*naming.service_account_subjects(clean.spec), "system:serviceaccount:astro-agents:extra"]

    result = role_op(clean, service_account_subjects=subjects).execute({})

    role_change = change(result, f"iam:role/{ROLE}")
    assert role_change["action"] == "updated"
    (path, values), = role_change["diff"].items()
    assert path.startswith("trust_policy.") and path.endswith(":sub")
    assert "system:serviceaccount:astro-agents:extra" in values["to"]
    assert "system:serviceaccount:astro-agents:extra" in json.dumps(stored_trust(clean))


def test_a_new_bucket_prefix_updates_the_permission_policy_with_a_diff(clean: Sandbox) -> None:
    role_op(clean).execute({})
    spec = clean.spec.model_copy(update={"backends": clean.spec.backends.model_copy(
        update={"xcom": clean.spec.backends.xcom.model_copy(update={"prefix": "xcom-v2"})})})
    policy = build_permission_policy(spec, clean.aws.account_id)

    result = role_op(clean, permission_policy=policy).execute({})

    policy_change = change(result, f"iam:role/{ROLE}/policy/{naming.IRSA_POLICY_NAME}")
    assert policy_change["action"] == "updated"
    assert any("xcom-v2" in json.dumps(values["to"]) for values in policy_change["diff"].values())
    stored = clean.aws.admin_client("iam").get_role_policy(RoleName=ROLE, PolicyName=naming.IRSA_POLICY_NAME)["PolicyDocument"]
    assert "arn:aws:s3:::sandbox-xcom/xcom-v2/*" in json.dumps(stored)


def test_stored_trust_policy_passes_parliament_and_names_no_wildcard_principal(clean: Sandbox) -> None:
    role_op(clean).execute({})
    trust = stored_trust(clean)

    findings = parliament.analyze_policy_string(json.dumps(trust), include_community_auditors=True).findings
    assert {f.issue for f in findings} <= TRUST_POLICY_FALSE_POSITIVES
    principals = [s["Principal"] for s in trust["Statement"]]
    assert principals == [{"Federated": f"arn:aws:iam::{clean.aws.account_id}:oidc-provider/{ISSUER_HOST}"}]
    assert trust["Statement"][0]["Condition"]["StringEquals"][f"{ISSUER_HOST}:aud"] == "sts.amazonaws.com"


def test_a_wildcard_principal_is_refused_before_any_call(clean: Sandbox) -> None:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}

    with pytest.raises(ConfigError, match="wildcard principal"):
        role_op(clean, trust_policy=trust).execute({})
    assert clean.aws.request_log.calls == []


def test_web_identity_trust_without_a_sub_condition_is_refused(clean: Sandbox) -> None:
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{ISSUER_HOST}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringLike": {f"{ISSUER_HOST}:sub": "system:serviceaccount:*:*"}},
    }]}

    with pytest.raises(ConfigError, match="without a StringEquals ':sub'"):
        role_op(clean, trust_policy=trust).execute({})


def test_dry_run_changes_nothing_and_returns_the_plan(clean: Sandbox) -> None:
    result = role_op(clean, dry_run=True).execute({})

    assert clean.aws.request_log.mutating_calls == []
    assert [(c["resource"], c["action"]) for c in result["changes"]] == [
        (f"iam:role/{ROLE}", "create"), (f"iam:role/{ROLE}/policy/{naming.IRSA_POLICY_NAME}", "create"),
    ]
    assert result["role_arn"] is None


def test_access_denied_names_the_missing_action(clean: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    iam = clean.aws.admin_client("iam")
    iam.create_user(UserName="read-only")
    iam.put_user_policy(UserName="read-only", PolicyName="read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["iam:Get*", "iam:List*", "sts:GetCallerIdentity"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName="read-only")["AccessKey"]
    admin = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_AWS_READ_ONLY", json.dumps({**admin, "login": key["AccessKeyId"], "password": key["SecretAccessKey"]}))

    with pytest.raises(AwsPermissionError, match="iam:CreateRole") as denied:
        role_op(clean, aws_conn_id="aws_read_only").execute({})

    assert denied.value.action == "iam:CreateRole"
    assert "aws_read_only" in str(denied.value) and key["SecretAccessKey"] not in str(denied.value)


def test_quota_error_names_the_quota() -> None:
    error = ClientError(
        {"Error": {"Code": "LimitExceeded", "Message": "Cannot exceed quota for RolesPerAccount: 1000"}}, "CreateRole"
    )

    mapped = aws_error(error, "iam", "creating IAM role x", "aws_default")

    assert isinstance(mapped, AwsQuotaError)
    assert mapped.quota == "RolesPerAccount"
    assert "RolesPerAccount" in str(mapped) and "Service Quotas" in str(mapped)
