"""EKS requests (boto3 `create_cluster` / `create_nodegroup` keyword arguments) and the VPC plan used
when the spec names no subnets, as data. They mirror the tutorial's eksctl file (reference 4.1).

Pure: role ARNs and subnet ids come in as arguments (from the IAM/VPC steps or the spec).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render.policies import (
    aws_partition,
    build_eks_cluster_trust_policy,
    build_eks_managed_policy_arns,
    build_eks_node_trust_policy,
)
from remote_agents.spec import EksClusterSpec, EnvironmentSpec

CONTROL_PLANE_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
VPC_CIDR = "192.168.0.0/16"  # eksctl's default, so the plan looks like what the tutorial created
SUBNET_PREFIX_LENGTH = 19
# Graviton families (m6g, c7gn, t4g, ...) need the ARM AMI; everything else runs the x86 one.
ARM_INSTANCE = re.compile(r"^[a-z]+\d+g[a-z]*\.")
LOAD_BALANCER_ROLE_TAGS = {"public": "kubernetes.io/role/elb", "private": "kubernetes.io/role/internal-elb"}


def build_create_cluster_request(
    spec: EnvironmentSpec, cluster_role_arn: str, subnet_ids: list[str] | None = None
) -> dict[str, Any]:
    """`EKS.create_cluster` kwargs; ``subnet_ids`` default to the spec's, else the VPC plan's."""
    eks = _eks(spec)
    subnets = list(subnet_ids or eks.subnet_ids)
    if not subnets:
        raise ConfigError(["cluster.subnet_ids: empty; create the VPC of build_vpc_plan first and pass its subnets"], spec.name)
    return _cluster_request(spec, cluster_role_arn, subnets)


def _cluster_request(spec: EnvironmentSpec, cluster_role_arn: str | None, subnets: list[str]) -> dict[str, Any]:
    eks = _eks(spec)
    return {
        "name": eks.name,
        "version": eks.kubernetes_version,
        "roleArn": cluster_role_arn,
        # Public endpoint as eksctl's default, so the management Deployment on Astro can reach it.
        "resourcesVpcConfig": {"subnetIds": subnets, "endpointPublicAccess": True, "endpointPrivateAccess": True},
        "logging": {"clusterLogging": [{"types": CONTROL_PLANE_LOG_TYPES, "enabled": True}]},
        "tags": naming.ownership_tags(spec),
    }


def build_nodegroup_requests(spec: EnvironmentSpec, node_role_arn: str, subnet_ids: list[str]) -> list[dict[str, Any]]:
    """`EKS.create_nodegroup` kwargs, one per spec node group; ``subnet_ids`` are where nodes run."""
    if not subnet_ids:
        raise ConfigError(["node groups need subnets: pass the private subnets of the VPC (or cluster.subnet_ids)"], spec.name)
    return _nodegroup_requests(spec, node_role_arn, subnet_ids)


def _nodegroup_requests(spec: EnvironmentSpec, node_role_arn: str | None, subnet_ids: list[str]) -> list[dict[str, Any]]:
    eks = _eks(spec)
    return [
        {
            "clusterName": eks.name,
            "nodegroupName": group.name,
            "scalingConfig": {"minSize": group.min_size, "maxSize": group.max_size, "desiredSize": group.desired_size},
            "instanceTypes": list(group.instance_types),
            "diskSize": group.disk_size_gib,
            "amiType": _ami_type(spec, group.name, group.instance_types),
            "subnets": list(subnet_ids),
            "nodeRole": node_role_arn,
            "labels": {"role": "worker", naming.ENVIRONMENT_LABEL: spec.name},
            "tags": {
                **naming.ownership_tags(spec),
                # The cluster autoscaler discovers node groups by these two tags (as in the tutorial).
                "k8s.io/cluster-autoscaler/enabled": "true",
                f"k8s.io/cluster-autoscaler/{eks.name}": "owned",
            },
        }
        for group in eks.node_groups
    ]


def build_eks_cluster_inputs(spec: EnvironmentSpec, availability_zones: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``EnsureEksClusterOperator`` for this spec, as plain data.

    What the spec does not give is left for the operator to fill in once it exists: role ARNs
    (``roleArn`` / ``nodeRole`` are None, the roles to create are described instead) and subnets
    (empty, with the VPC plan to create them from).
    """
    eks = _eks(spec)
    subnets = list(eks.subnet_ids)
    roles = naming.eks_role_names(spec)
    managed = build_eks_managed_policy_arns(spec)
    return {
        "cluster_request": _cluster_request(spec, eks.cluster_role_arn, subnets),
        "nodegroup_requests": _nodegroup_requests(spec, eks.node_role_arn, subnets),
        "vpc_plan": None if subnets else build_vpc_plan(spec, availability_zones),
        "cluster_role": None if eks.cluster_role_arn else {
            "role_name": roles["cluster"],
            "trust_policy": build_eks_cluster_trust_policy(spec),
            "managed_policy_arns": managed["cluster"],
        },
        "node_role": None if eks.node_role_arn else {
            "role_name": roles["node"],
            "trust_policy": build_eks_node_trust_policy(spec),
            "managed_policy_arns": managed["node"],
        },
        "tags": naming.ownership_tags(spec),
        "region_name": eks.region,
    }


def build_vpc_plan(spec: EnvironmentSpec, availability_zones: list[str] | None = None) -> dict[str, Any]:
    """VPC with a public and a private subnet in each of two AZs, one NAT gateway, and their routes.

    Nodes go in the private subnets; agents only make outbound calls (to Astro, S3, Secrets Manager),
    which leave through the NAT gateway. The subnet tags let load balancers find the subnets.
    """
    eks = _eks(spec)
    zones = availability_zones or [f"{eks.region}a", f"{eks.region}b"]
    if len(zones) != 2 or len(set(zones)) != 2:
        raise ConfigError([f"availability_zones: need two different zones, got {zones}"], spec.name)
    blocks = list(ipaddress.ip_network(VPC_CIDR).subnets(new_prefix=SUBNET_PREFIX_LENGTH))
    tags = naming.ownership_tags(spec)
    cluster_tag = {f"kubernetes.io/cluster/{eks.name}": "shared"}
    layout = [(tier, zone) for tier in ("public", "private") for zone in zones]
    subnets = [
        {
            "name": f"{eks.name}-{tier}-{zone}",
            "tier": tier,
            "availability_zone": zone,
            "cidr_block": str(block),
            "map_public_ip_on_launch": tier == "public",
            "tags": {**tags, **cluster_tag, "Name": f"{eks.name}-{tier}-{zone}", LOAD_BALANCER_ROLE_TAGS[tier]: "1"},
        }
        for (tier, zone), block in zip(layout, blocks)
    ]
    public = [s["name"] for s in subnets if s["tier"] == "public"]
    private = [s["name"] for s in subnets if s["tier"] == "private"]
    return {
        "region": eks.region,
        "partition": aws_partition(eks.region),
        "vpc": {"cidr_block": VPC_CIDR, "enable_dns_hostnames": True, "enable_dns_support": True, "tags": {**tags, "Name": eks.name}},
        "subnets": subnets,
        "internet_gateway": {"tags": {**tags, "Name": eks.name}},
        "nat_gateway": {"subnet": public[0], "tags": {**tags, "Name": eks.name}},
        "route_tables": [
            {"name": f"{eks.name}-public", "subnets": public, "default_route": "internet_gateway", "tags": {**tags, "Name": f"{eks.name}-public"}},
            {"name": f"{eks.name}-private", "subnets": private, "default_route": "nat_gateway", "tags": {**tags, "Name": f"{eks.name}-private"}},
        ],
        "cluster_subnets": public + private,
        "node_subnets": private,
    }


def _ami_type(spec: EnvironmentSpec, group: str, instance_types: list[str]) -> str:
    arm = {bool(ARM_INSTANCE.match(t)) for t in instance_types}
    if len(arm) > 1:
        raise ConfigError(
            [f"cluster.node_groups '{group}': {instance_types} mixes ARM (Graviton) and x86 instance types; "
             "one node group runs one AMI — split them into two node groups"],
            spec.name,
        )
    return "AL2023_ARM_64_STANDARD" if arm == {True} else "AL2023_x86_64_STANDARD"


def _eks(spec: EnvironmentSpec) -> EksClusterSpec:
    if spec.eks is None:
        raise ConfigError(["cluster.kind: 'existing' — there is no EKS cluster to create"], spec.name)
    return spec.eks
