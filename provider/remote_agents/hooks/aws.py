"""AWS calls for the cluster and IRSA operators: IAM and EC2 (VPC) hooks beside the amazon ``EksHook``.

The amazon provider has no IAM hook and its ``EC2Hook`` covers instances, not VPCs, so these are
thin ``AwsBaseHook`` subclasses. Every call goes through ``AwsCalls.call``, the one place where a
botocore ``ClientError`` becomes a specific error: AccessDenied names the IAM action the management
identity lacks, quota errors name the quota, and "not found" is returned as None when the caller
can act on absence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.eks import EksHook
from botocore.exceptions import ClientError

from remote_agents.errors import AwsError, AwsPermissionError, AwsQuotaError

NOT_FOUND_CODES = frozenset({
    "NoSuchEntity",
    "ResourceNotFoundException",
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidAssociationID.NotFound",
    "NatGatewayNotFound",
    "Gateway.NotAttached",
})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"})
# Codes that name their quota; the generic ones (IAM LimitExceeded, EKS ResourceLimitExceeded) say it in the message.
QUOTAS = {
    "VpcLimitExceeded": "VPCs per Region",
    "AddressLimitExceeded": "EC2-VPC Elastic IPs per Region",
    "NatGatewayLimitExceeded": "NAT gateways per Availability Zone",
    "InternetGatewayLimitExceeded": "Internet gateways per Region",
    "SubnetLimitExceeded": "Subnets per VPC",
    "RouteTableLimitExceeded": "Route tables per VPC",
    "LimitExceeded": "",
    "LimitExceededException": "",
    "ResourceLimitExceeded": "",
    "ResourceLimitExceededException": "",
    "ServiceQuotaExceededException": "",
}
_DENIED_ACTION = re.compile(r"not authorized to perform:?\s*([A-Za-z0-9-]+:[A-Za-z0-9*]+)")
_DENIED_RESOURCE = re.compile(r"on resource:?\s*(\S+?)(?:\s|<|$)")
_QUOTA_IN_MESSAGE = re.compile(r"(?:quota for|limit of|quota of)\s+([A-Za-z][\w ]*?)(?:[:.,]|$)", re.IGNORECASE)
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)


def aws_error(error: ClientError, service: str, doing: str, conn_id: str | None) -> AwsError:
    """A specific, actionable error for a failed AWS call (AWS error messages carry no secrets)."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    message = str(details.get("Message", ""))
    # Some services (EKS on moto) wrap an XML error in a JSON error's message.
    if nested := _XML_MESSAGE.search(message):
        message = nested.group(1)
        code = "AccessDenied" if "not authorized to perform" in message else code
    action = f"{service}:{error.operation_name}"
    if code in ACCESS_DENIED_CODES or "not authorized to perform" in message:
        if found := _DENIED_ACTION.search(message):
            action = found.group(1)
        resource = _DENIED_RESOURCE.search(message)
        on = f" on {resource.group(1)}" if resource else ""
        return AwsPermissionError(
            f"AWS denied {action}{on} while {doing}: the identity of AWS connection {conn_id!r} lacks "
            f"permission {action}; add '{action}' to the management role's IAM policy and re-run",
            code,
            action,
        )
    if code in QUOTAS:
        quota = QUOTAS[code] or _quota_from(message) or code
        return AwsQuotaError(
            f"AWS quota '{quota}' reached while {doing} ({action}: {message}); delete unused resources or request "
            "an increase in the Service Quotas console, then re-run",
            code,
            action,
            quota,
        )
    return AwsError(f"{action} failed while {doing}: {code}: {message}", code, action)


def _quota_from(message: str) -> str:
    found = _QUOTA_IN_MESSAGE.search(message)
    return found.group(1).strip() if found else ""


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tags or []}


def owns(tags: dict[str, str], ownership: dict[str, str]) -> bool:
    """A resource is ours when it carries every ownership tag with our value."""
    return bool(ownership) and all(tags.get(key) == value for key, value in ownership.items())


class AwsCalls:
    """Mixin for AwsBaseHook subclasses: each call names what it was doing, errors are mapped here."""

    conn: Any
    aws_conn_id: str | None

    def call(self, operation: str, *, doing: str, missing_ok: bool = False, **kwargs: Any) -> Any:
        """``conn.<operation>(**kwargs)``; None for "not found" when ``missing_ok``."""
        try:
            return getattr(self.conn, operation)(**kwargs)
        except ClientError as error:
            if missing_ok and error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
                return None
            raise aws_error(error, self.conn.meta.service_model.signing_name, doing, self.aws_conn_id) from error

    def pages(self, operation: str, key: str, *, doing: str, **kwargs: Any) -> Iterator[Any]:
        """Every item under ``key`` across the pages of a paginated list call."""
        try:
            for page in self.conn.get_paginator(operation).paginate(**kwargs):
                yield from page.get(key, [])
        except ClientError as error:
            raise aws_error(error, self.conn.meta.service_model.signing_name, doing, self.aws_conn_id) from error


class IamHook(AwsCalls, AwsBaseHook):
    """IAM roles, their policies and OIDC identity providers (the amazon provider has no IAM hook)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "iam"
        super().__init__(*args, **kwargs)

    def get_role(self, name: str) -> dict[str, Any] | None:
        reply = self.call("get_role", doing=f"reading IAM role {name}", missing_ok=True, RoleName=name)
        return reply["Role"] if reply else None

    def inline_policy_names(self, role: str) -> list[str]:
        return list(self.pages("list_role_policies", "PolicyNames", doing=f"listing policies of role {role}", RoleName=role))

    def inline_policy(self, role: str, policy_name: str) -> dict[str, Any] | str | None:
        reply = self.call(
            "get_role_policy", doing=f"reading policy {policy_name} of role {role}", missing_ok=True,
            RoleName=role, PolicyName=policy_name,
        )
        return reply["PolicyDocument"] if reply else None

    def attached_policy_arns(self, role: str) -> list[str]:
        attached = self.pages(
            "list_attached_role_policies", "AttachedPolicies", doing=f"listing managed policies of role {role}", RoleName=role
        )
        return [policy["PolicyArn"] for policy in attached]

    def find_oidc_provider(self, issuer_host: str) -> dict[str, Any] | None:
        """The OIDC provider for an issuer (``oidc.eks.<region>.amazonaws.com/id/<id>``), with its ARN."""
        listed = self.call("list_open_id_connect_providers", doing="listing IAM OIDC providers")
        for entry in listed.get("OpenIDConnectProviderList", []):
            if entry["Arn"].split(":oidc-provider/", 1)[-1] == issuer_host:
                provider = self.call(
                    "get_open_id_connect_provider", doing=f"reading OIDC provider {issuer_host}", missing_ok=True,
                    OpenIDConnectProviderArn=entry["Arn"],
                )
                return {**provider, "Arn": entry["Arn"]} if provider else None
        return None

    def oidc_providers(self) -> list[dict[str, Any]]:
        """Every OIDC provider of the account, with ARN and tags (for teardown by ownership tags)."""
        listed = self.call("list_open_id_connect_providers", doing="listing IAM OIDC providers")
        providers = []
        for entry in listed.get("OpenIDConnectProviderList", []):
            provider = self.call(
                "get_open_id_connect_provider", doing=f"reading OIDC provider {entry['Arn']}", missing_ok=True,
                OpenIDConnectProviderArn=entry["Arn"],
            )
            if provider:
                providers.append({**provider, "Arn": entry["Arn"]})
        return providers


class VpcHook(AwsCalls, AwsBaseHook):
    """EC2 networking: VPC, subnets, gateways and route tables, found by tags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "ec2"
        super().__init__(*args, **kwargs)

    @staticmethod
    def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(tags.items())]

    def find(self, kind: str, tags: dict[str, str], **filters: str) -> list[dict[str, Any]]:
        """Resources of ``kind`` (``vpcs``, ``subnets``, ``internet_gateways``, ``nat_gateways``, ``route_tables``,
        ``addresses``) carrying all ``tags``."""
        operation, key = _EC2_LISTS[kind]
        filter_list = self.tag_filters(tags) + [{"Name": name.replace("_", "-"), "Values": [value]} for name, value in filters.items()]
        param = "Filter" if kind == "nat_gateways" else "Filters"
        if kind == "addresses":
            return list(self.call(operation, doing=f"looking up {kind}", **{param: filter_list}).get(key, []))
        return list(self.pages(operation, key, doing=f"looking up {kind}", **{param: filter_list}))

    @staticmethod
    def tag_specifications(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
        return [{"ResourceType": resource_type, "Tags": tag_list(tags)}]


_EC2_LISTS = {
    "vpcs": ("describe_vpcs", "Vpcs"),
    "subnets": ("describe_subnets", "Subnets"),
    "internet_gateways": ("describe_internet_gateways", "InternetGateways"),
    "nat_gateways": ("describe_nat_gateways", "NatGateways"),
    "route_tables": ("describe_route_tables", "RouteTables"),
    "addresses": ("describe_addresses", "Addresses"),
}


class EksClusterHook(AwsCalls, EksHook):
    """The amazon ``EksHook`` with mapped errors and absence as None."""

    def cluster(self, name: str) -> dict[str, Any] | None:
        reply = self.call("describe_cluster", doing=f"reading EKS cluster {name}", missing_ok=True, name=name)
        return reply["cluster"] if reply else None

    def nodegroup(self, cluster: str, nodegroup: str) -> dict[str, Any] | None:
        reply = self.call(
            "describe_nodegroup", doing=f"reading node group {nodegroup} of {cluster}", missing_ok=True,
            clusterName=cluster, nodegroupName=nodegroup,
        )
        return reply["nodegroup"] if reply else None

    def nodegroup_names(self, cluster: str) -> list[str]:
        return list(self.pages("list_nodegroups", "nodegroups", doing=f"listing node groups of {cluster}", clusterName=cluster))
