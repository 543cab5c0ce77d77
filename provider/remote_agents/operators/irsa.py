"""IAM for the agents: the cluster's OIDC identity provider and the IRSA roles, created, converged, deleted.

Permissions are **inline** role policies (``put_role_policy``), not managed policies: the
permissions belong to exactly one role and live and die with it; one call replaces the whole
document, so converging is a compare-and-put with no policy versions to rotate (managed policies
keep at most five versions and need ``create_policy_version`` + ``delete_policy_version``), and
teardown needs no separate policy object to find and delete. The EKS cluster and node roles get
AWS *managed* policies attached, which AWS maintains.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from remote_agents import naming
from remote_agents.changes import Action, Change, diff_values
from remote_agents.errors import AwsError, ConfigError
from remote_agents.operators.base import AWS_TEMPLATE_FIELDS, AwsOperator, report_changes
from remote_agents.render.policies import (
    build_web_identity_trust_policy,
    normalize_policy,
    trust_policy_problems,
)

if TYPE_CHECKING:
    from remote_agents.hooks.aws import EksClusterHook, IamHook

# The AWS hooks (and with them boto3 and the amazon provider, about 0.2 s) are imported where they
# are used, not here: Dag files import this module, and each parse would pay for them.

STS_AUDIENCE = "sts.amazonaws.com"
# The root CA of the EKS OIDC issuers (what eksctl registers). IAM no longer checks the thumbprint
# for issuers it trusts through its own CA library, but the API still stores one.
EKS_OIDC_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"


def role_resource(role_name: str) -> str:
    return f"iam:role/{role_name}"


def ensure_role(
    log: Any,
    iam: IamHook,
    *,
    role_name: str,
    trust_policy: dict[str, Any],
    inline_policies: dict[str, dict[str, Any]] | None = None,
    managed_policy_arns: Sequence[str] = (),
    tags: dict[str, str] | None = None,
    description: str = "",
    dry_run: bool = False,
) -> tuple[list[Change], str | None]:
    """Create the role or converge its trust, tags and policies; returns the changes and the role ARN.

    A role that exists without any of our tags was made by someone else: it is converged as asked
    but not tagged, so teardown will leave it alone.
    """
    from remote_agents.hooks.aws import tag_list

    tags = tags or {}
    resource = role_resource(role_name)
    role = iam.get_role(role_name)
    if role is None:
        if not dry_run:
            role = iam.call(
                "create_role", doing=f"creating IAM role {role_name}", RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(trust_policy), Description=description, Tags=tag_list(tags),
            )["Role"]
        changes = [Change(resource, Action.CREATED, diff_values({}, {"trust_policy": trust_policy, "tags": tags}), dry_run)]
        current_inline: dict[str, Any] = {}
        attached: list[str] = []
    else:
        changes = [_converge_role(log, iam, role, trust_policy, tags, dry_run)]
        current_inline = {name: iam.inline_policy(role_name, name) for name in (inline_policies or {})}
        attached = iam.attached_policy_arns(role_name)
    for policy_name, document in (inline_policies or {}).items():
        changes.append(_converge_inline(iam, role_name, policy_name, document, current_inline.get(policy_name), dry_run))
    for arn in managed_policy_arns:
        action = Action.UNCHANGED if arn in attached else Action.CREATED
        if action is Action.CREATED and not dry_run:
            iam.call("attach_role_policy", doing=f"attaching {arn} to role {role_name}", RoleName=role_name, PolicyArn=arn)
        changes.append(Change(f"{resource}/attached/{arn.rsplit('/', 1)[-1]}", action, dry_run=dry_run))
    return changes, role["Arn"] if role else None


def policy_diff(prefix: str, current: dict[str, Any] | str, desired: dict[str, Any]) -> dict[str, Any]:
    """Semantic difference of two policy documents, with statements keyed by Sid (or position)."""

    def keyed(document: dict[str, Any] | str) -> dict[str, Any]:
        normal = normalize_policy(document)
        statements = normal.get("Statement", [])
        statements = statements if isinstance(statements, list) else [statements]
        return {**normal, "Statement": {s.get("Sid", str(i)): s for i, s in enumerate(statements)}}

    return {f"{prefix}.{path}": values for path, values in diff_values(keyed(current), keyed(desired)).items()}


def _converge_role(
    log: Any, iam: IamHook, role: dict[str, Any], trust_policy: dict[str, Any], tags: dict[str, str], dry_run: bool
) -> Change:
    from remote_agents.hooks.aws import tag_dict, tag_list

    name = role["RoleName"]
    current_tags = tag_dict(role.get("Tags"))
    others = {key: current_tags[key] for key in tags if key in current_tags and current_tags[key] != tags[key]}
    if others:
        # Re-tagging would hand the role over: the owner's teardown would skip it and ours delete it.
        owner = ", ".join(f"{key}={value}" for key, value in sorted(others.items()))
        raise AwsError(f"IAM role {name} belongs to another remote-agents environment ({owner}) and is left as it "
                       "is; give this spec its own identity.role_name, or tear that environment down first",
                       code="OwnedByAnotherEnvironment", action="iam:TagRole")
    diff = policy_diff("trust_policy", role["AssumeRolePolicyDocument"], trust_policy)
    if diff and not dry_run:
        iam.call("update_assume_role_policy", doing=f"updating the trust of role {name}", RoleName=name,
                 PolicyDocument=json.dumps(trust_policy))
    if not set(tags) & set(current_tags):
        if tags:
            log.info("IAM role %s exists without our tags %s: adopted as is, teardown will not delete it", name, tags)
    else:
        missing = {key: value for key, value in tags.items() if current_tags.get(key) != value}
        diff.update({f"tags.{key}": {"from": current_tags.get(key), "to": value} for key, value in missing.items()})
        if missing and not dry_run:
            iam.call("tag_role", doing=f"tagging role {name}", RoleName=name, Tags=tag_list(missing))
    return Change(role_resource(name), Action.UPDATED if diff else Action.UNCHANGED, diff, dry_run)


def _converge_inline(
    iam: IamHook, role_name: str, policy_name: str, desired: dict[str, Any], current: dict[str, Any] | str | None, dry_run: bool
) -> Change:
    resource = f"{role_resource(role_name)}/policy/{policy_name}"
    if current is None:
        action, diff = Action.CREATED, diff_values({}, {"policy": desired})
    else:
        diff = policy_diff("policy", current, desired)
        action = Action.UPDATED if diff else Action.UNCHANGED
    if action is not Action.UNCHANGED and not dry_run:
        iam.call("put_role_policy", doing=f"writing policy {policy_name} of role {role_name}", RoleName=role_name,
                 PolicyName=policy_name, PolicyDocument=json.dumps(desired))
    return Change(resource, action, diff, dry_run)


def delete_role(log: Any, iam: IamHook, role_name: str, tags: dict[str, str], dry_run: bool) -> Change | None:
    """Delete the role and its policies if it carries our tags; None when it was skipped as not ours."""
    from remote_agents.hooks.aws import owns, tag_dict

    resource = role_resource(role_name)
    role = iam.get_role(role_name)
    if role is None:
        return Change(resource, Action.ABSENT, dry_run=dry_run)
    if not owns(tag_dict(role.get("Tags")), tags):
        log.warning("IAM role %s does not carry the ownership tags %s: not created by this environment, left alone", role_name, tags)
        return None
    if not dry_run:
        for policy_name in iam.inline_policy_names(role_name):
            iam.call("delete_role_policy", doing=f"deleting policy {policy_name} of role {role_name}", missing_ok=True,
                     RoleName=role_name, PolicyName=policy_name)
        for arn in iam.attached_policy_arns(role_name):
            iam.call("detach_role_policy", doing=f"detaching {arn} from role {role_name}", missing_ok=True,
                     RoleName=role_name, PolicyArn=arn)
        profiles = iam.pages("list_instance_profiles_for_role", "InstanceProfiles",
                             doing=f"listing instance profiles of role {role_name}", RoleName=role_name)
        for profile in list(profiles):
            iam.call("remove_role_from_instance_profile", doing=f"removing role {role_name} from {profile['InstanceProfileName']}",
                     missing_ok=True, RoleName=role_name, InstanceProfileName=profile["InstanceProfileName"])
        iam.call("delete_role", doing=f"deleting IAM role {role_name}", missing_ok=True, RoleName=role_name)
    return Change(resource, Action.DELETED, dry_run=dry_run)


def issuer_host(issuer: str) -> str:
    return issuer.removeprefix("https://")


class _IamOperator(AwsOperator):
    @cached_property
    def iam_hook(self) -> IamHook:
        from remote_agents.hooks.aws import IamHook

        return self.aws_hook(IamHook)

    @cached_property
    def eks_hook(self) -> EksClusterHook:
        from remote_agents.hooks.aws import EksClusterHook

        return self.aws_hook(EksClusterHook)

    def _cluster_issuer(self, cluster_name: str | None) -> str | None:
        cluster = self.eks_hook.cluster(cluster_name) if cluster_name else None
        return cluster["identity"]["oidc"]["issuer"] if cluster else None


class EnsureOidcProviderOperator(_IamOperator):
    """The EKS cluster's IAM OIDC identity provider, found by issuer URL and created once.

    Give ``oidc_issuer`` (e.g. the ``oidc_issuer`` of ``EnsureEksClusterOperator``'s XCom) or
    ``eks_cluster_name`` to read it from the cluster. Returns ``{"changes": [...],
    "oidc_provider_arn": ..., "oidc_issuer": ...}``.

    .. code-block:: python

        oidc = EnsureOidcProviderOperator(
            task_id="oidc_provider",
            eks_cluster_name="my-cluster",
            tags=naming.ownership_tags(spec),  # what DeleteOidcProviderOperator selects on
            aws_conn_id="aws_admin",
            region_name="us-east-1",
        )

    :param oidc_issuer: the cluster's OIDC issuer URL; None reads it from ``eks_cluster_name``
    :param eks_cluster_name: the EKS cluster whose issuer to use when ``oidc_issuer`` is not given
    :param client_ids: the audiences the provider must accept; missing ones are added, others kept
    :param thumbprints: the provider's certificate thumbprints, set to exactly these; by default that
        of the root CA of the EKS OIDC issuers
    :param tags: tags of a new provider (an existing one keeps its tags); ``DeleteOidcProviderOperator``
        deletes only a provider carrying its ownership tags
    """

    template_fields: Sequence[str] = (*AWS_TEMPLATE_FIELDS, "oidc_issuer", "eks_cluster_name", "client_ids", "thumbprints", "tags")

    def __init__(
        self,
        *,
        oidc_issuer: str | None = None,
        eks_cluster_name: str | None = None,
        client_ids: Sequence[str] = (STS_AUDIENCE,),
        thumbprints: Sequence[str] = (EKS_OIDC_THUMBPRINT,),
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.oidc_issuer = oidc_issuer
        self.eks_cluster_name = eks_cluster_name
        self.client_ids = client_ids
        self.thumbprints = thumbprints
        self.tags = tags

    def execute(self, context: Any) -> dict[str, Any]:
        if not (self.oidc_issuer or self.eks_cluster_name):
            raise ConfigError(["give oidc_issuer or eks_cluster_name"], source=self.task_id)
        issuer = self.oidc_issuer or self._cluster_issuer(self.eks_cluster_name)
        if issuer is None:
            if self.is_dry_run:  # the cluster is itself only planned
                change = Change(f"iam:oidc-provider/(issuer of {self.eks_cluster_name})", Action.CREATED, dry_run=True)
                return report_changes(self.log, [change], oidc_provider_arn=None, oidc_issuer=None)
            raise ConfigError([f"eks_cluster_name: EKS cluster {self.eks_cluster_name!r} does not exist; create it first"], source=self.task_id)
        change, arn = self._ensure(issuer)
        return report_changes(self.log, [change], oidc_provider_arn=arn, oidc_issuer=issuer)

    def _ensure(self, issuer: str) -> tuple[Change, str | None]:
        from remote_agents.hooks.aws import tag_list

        host = issuer_host(issuer)
        resource = f"iam:oidc-provider/{host}"
        provider = self.iam_hook.find_oidc_provider(host)
        if provider is None:
            arn = None
            if not self.is_dry_run:
                arn = self.iam_hook.call(
                    "create_open_id_connect_provider", doing=f"creating the OIDC provider for {issuer}",
                    Url=issuer, ClientIDList=list(self.client_ids), ThumbprintList=list(self.thumbprints),
                    Tags=tag_list(self.tags or {}),
                )["OpenIDConnectProviderArn"]
            diff = diff_values({}, {"client_ids": list(self.client_ids), "thumbprints": list(self.thumbprints)})
            return Change(resource, Action.CREATED, diff, self.is_dry_run), arn
        arn = provider["Arn"]
        diff: dict[str, Any] = {}
        missing_ids = [cid for cid in self.client_ids if cid not in provider.get("ClientIDList", [])]
        if missing_ids:
            diff["client_ids"] = {"from": provider.get("ClientIDList", []), "to": sorted({*provider.get("ClientIDList", []), *missing_ids})}
            for client_id in missing_ids if not self.is_dry_run else []:
                self.iam_hook.call("add_client_id_to_open_id_connect_provider", doing=f"adding audience {client_id} to {arn}",
                                   OpenIDConnectProviderArn=arn, ClientID=client_id)
        if set(self.thumbprints) != set(provider.get("ThumbprintList", [])):
            diff["thumbprints"] = {"from": provider.get("ThumbprintList", []), "to": list(self.thumbprints)}
            if not self.is_dry_run:
                self.iam_hook.call("update_open_id_connect_provider_thumbprint", doing=f"updating the thumbprints of {arn}",
                                   OpenIDConnectProviderArn=arn, ThumbprintList=list(self.thumbprints))
        return Change(resource, Action.UPDATED if diff else Action.UNCHANGED, diff, self.is_dry_run), arn


class EnsureIrsaRoleOperator(_IamOperator):
    """An IRSA role trusting exactly the given ServiceAccounts, with one inline permission policy.

    Give the trust as ``oidc_issuer`` + ``service_account_subjects`` (built with ``StringEquals`` on
    ``:sub`` and ``:aud``; ``account_id`` defaults to the connection's account) or as a ready
    ``trust_policy`` document. A trust with a wildcard principal, or web identity without an exact
    ``:sub`` condition, is refused. Trust, tags and the policy are updated in place when they
    differ. Returns ``{"changes": [...], "role_name": ..., "role_arn": ...}``.

    .. code-block:: python

        role = EnsureIrsaRoleOperator(
            task_id="irsa_role",
            role_name="prod-remote-agents",
            oidc_issuer="{{ ti.xcom_pull('eks_cluster')['oidc_issuer'] }}",
            service_account_subjects=["system:serviceaccount:astro-agents:astro-agent-worker-default"],
            permission_policy=build_permission_policy(spec, account_id),
            tags=naming.ownership_tags(spec),  # what DeleteIrsaRoleOperator selects on
        )

    :param role_name: the IAM role
    :param permission_policy: the role's permissions: a policy document, kept as its inline policy
        ``policy_name``
    :param oidc_issuer: the cluster's OIDC issuer URL, for a trust built from ``service_account_subjects``
    :param service_account_subjects: the ServiceAccounts the role trusts, each as
        ``system:serviceaccount:<namespace>:<name>``
    :param account_id: the AWS account of the OIDC provider in a built trust; None means the account
        of ``aws_conn_id``
    :param trust_policy: a ready trust policy document, used instead of one built from ``oidc_issuer``
        and ``service_account_subjects``
    :param policy_name: the name of the inline permission policy
    :param tags: tags of the role (pass the ownership tags, by which ``DeleteIrsaRoleOperator`` finds it
        ours); an existing role with none of these tag keys is adopted untagged
    """

    template_fields: Sequence[str] = (
        *AWS_TEMPLATE_FIELDS, "role_name", "oidc_issuer", "service_account_subjects", "account_id",
        "trust_policy", "permission_policy", "policy_name", "tags",
    )

    def __init__(
        self,
        *,
        role_name: str,
        permission_policy: dict[str, Any],
        oidc_issuer: str | None = None,
        service_account_subjects: Sequence[str] | None = None,
        account_id: str | None = None,
        trust_policy: dict[str, Any] | None = None,
        policy_name: str = naming.IRSA_POLICY_NAME,
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.role_name = role_name
        self.permission_policy = permission_policy
        self.oidc_issuer = oidc_issuer
        self.service_account_subjects = service_account_subjects
        self.account_id = account_id
        self.trust_policy = trust_policy
        self.policy_name = policy_name
        self.tags = tags

    def execute(self, context: Any) -> dict[str, Any]:
        trust = self._trust_policy()
        if problems := trust_policy_problems(trust):
            raise ConfigError(problems, source=f"trust policy of IAM role {self.role_name}")
        changes, arn = ensure_role(
            self.log, self.iam_hook, role_name=self.role_name, trust_policy=trust,
            inline_policies={self.policy_name: self.permission_policy}, tags=self.tags,
            description="Remote Execution Agents (IRSA), managed by remote-agents", dry_run=self.is_dry_run,
        )
        return report_changes(self.log, changes, role_name=self.role_name, role_arn=arn)

    def _trust_policy(self) -> dict[str, Any]:
        if self.trust_policy:
            return self.trust_policy
        if not (self.oidc_issuer and self.service_account_subjects):
            raise ConfigError(["give trust_policy, or oidc_issuer and service_account_subjects"], source=self.task_id)
        account = self.account_id or self.iam_hook.account_id
        return build_web_identity_trust_policy(
            self.oidc_issuer, account, list(self.service_account_subjects), self.iam_hook.conn.meta.partition
        )


class DeleteIrsaRoleOperator(_IamOperator):
    """Delete IAM roles this environment created (policies detached first); foreign or gone roles are skipped.

    A role is ours when it carries every one of ``tags`` (the ownership tags it was created with).

    .. code-block:: python

        DeleteIrsaRoleOperator(task_id="delete_irsa_role", role_names=["prod-remote-agents"],
                               tags={"remote-agents:environment": "prod", "remote-agents:managed-by": "remote-agents"})

    :param role_names: the IAM roles to delete
    :param tags: the ownership tags a role must carry, every one with this value, to be deleted (required,
        not empty)
    """

    template_fields: Sequence[str] = (*AWS_TEMPLATE_FIELDS, "role_names", "tags")

    def __init__(self, *, role_names: Sequence[str], tags: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.role_names = role_names
        self.tags = tags

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.tags:
            raise ConfigError(["tags: give the ownership tags; without them every role would look like ours"], source=self.task_id)
        changes, skipped = [], []
        for name in self.role_names:
            change = delete_role(self.log, self.iam_hook, name, self.tags, self.is_dry_run)
            if change is None:
                skipped.append(role_resource(name))
            else:
                changes.append(change)
        return report_changes(self.log, changes, skipped=skipped)


class DeleteOidcProviderOperator(_IamOperator):
    """Delete the cluster's OIDC provider if this environment created it (it carries all ``tags``).

    Found by ``oidc_issuer``, else by the issuer of ``eks_cluster_name``, else (cluster already
    gone) every OIDC provider carrying ``tags``. Run it before deleting the cluster when you can.
    While other environments run on the cluster (``needed_by``), a provider of ours is kept: their
    IRSA roles trust it.

    .. code-block:: python

        DeleteOidcProviderOperator(task_id="delete_oidc", eks_cluster_name="my-cluster",
                                   tags={"remote-agents:environment": "prod", "remote-agents:managed-by": "remote-agents"})

    :param tags: the ownership tags a provider must carry, every one with this value, to be deleted
        (required, not empty)
    :param oidc_issuer: the issuer URL of the provider to delete
    :param eks_cluster_name: the EKS cluster whose issuer to use when ``oidc_issuer`` is not given; with
        neither, or once the cluster is gone, every provider carrying ``tags`` is deleted
    :param needed_by: the other environments whose agents assume roles through this provider
    """

    template_fields: Sequence[str] = (*AWS_TEMPLATE_FIELDS, "oidc_issuer", "eks_cluster_name", "tags", "needed_by")

    def __init__(
        self, *, tags: dict[str, str], oidc_issuer: str | None = None, eks_cluster_name: str | None = None,
        needed_by: Sequence[str] = (), **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tags = tags
        self.oidc_issuer = oidc_issuer
        self.eks_cluster_name = eks_cluster_name
        self.needed_by = needed_by

    def execute(self, context: Any) -> dict[str, Any]:
        from remote_agents.hooks.aws import owns, tag_dict

        if not self.tags:
            raise ConfigError(["tags: give the ownership tags; without them every provider would look like ours"], source=self.task_id)
        issuer = self.oidc_issuer or self._cluster_issuer(self.eks_cluster_name)
        if issuer:
            found = self.iam_hook.find_oidc_provider(issuer_host(issuer))
            candidates = [found] if found else []
            label = issuer_host(issuer)
        else:
            candidates = [p for p in self.iam_hook.oidc_providers() if owns(tag_dict(p.get("Tags")), self.tags)]
            label = f"(tagged {self.tags})"
        if not candidates:
            return report_changes(self.log, [Change(f"iam:oidc-provider/{label}", Action.ABSENT, dry_run=self.is_dry_run)], skipped=[])
        changes, skipped, kept = [], [], {}
        for provider in candidates:
            resource = f"iam:oidc-provider/{provider['Arn'].split(':oidc-provider/', 1)[-1]}"
            if not owns(tag_dict(provider.get("Tags")), self.tags):
                self.log.warning("%s does not carry the ownership tags %s: not created by this environment, left alone", resource, self.tags)
                skipped.append(resource)
                continue
            if self.needed_by:
                self.log.info("%s is still used by %s: kept", resource, ", ".join(self.needed_by))
                kept[resource] = list(self.needed_by)
                continue
            if not self.is_dry_run:
                self.iam_hook.call("delete_open_id_connect_provider", doing=f"deleting {resource}", missing_ok=True,
                                   OpenIDConnectProviderArn=provider["Arn"])
            changes.append(Change(resource, Action.DELETED, dry_run=self.is_dry_run))
        return report_changes(self.log, changes, skipped=skipped, kept=kept)
