"""EKS requests and the VPC plan (render/cluster.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render.cluster import build_create_cluster_request, build_nodegroup_requests, build_vpc_plan
from remote_agents.spec import EnvironmentSpec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EKS_SPECS = ["tutorial", "sandbox", "multi-queue"]
CLUSTER_ROLE = "arn:aws:iam::123456789012:role/cluster"
NODE_ROLE = "arn:aws:iam::123456789012:role/node"
SUBNETS = ["subnet-a", "subnet-b"]


def spec_named(name: str) -> EnvironmentSpec:
    return load_spec(ROOT / "include" / "environments" / f"{name}.yaml")


def with_node_group(**group: Any) -> EnvironmentSpec:
    data = spec_named("tutorial").model_dump(mode="json", exclude_defaults=True)
    data["cluster"]["node_groups"] = [{"name": "workers", **group}]
    return parse_spec(data)


def test_tutorial_cluster_request_matches_the_eksctl_file() -> None:
    spec = spec_named("tutorial")
    assert build_create_cluster_request(spec, CLUSTER_ROLE, SUBNETS) == {
        "name": "remote-execution-airflow-cluster",
        "version": "1.33",
        "roleArn": CLUSTER_ROLE,
        "resourcesVpcConfig": {"subnetIds": SUBNETS, "endpointPublicAccess": True, "endpointPrivateAccess": True},
        "logging": {"clusterLogging": [{"types": ["api", "audit", "authenticator", "controllerManager", "scheduler"], "enabled": True}]},
        "tags": {"remote-agents:environment": "tutorial", "remote-agents:managed-by": "remote-agents"},
    }


def test_tutorial_nodegroup_request_matches_the_eksctl_file() -> None:
    (request,) = build_nodegroup_requests(spec_named("tutorial"), NODE_ROLE, SUBNETS)
    assert request == {
        "clusterName": "remote-execution-airflow-cluster",
        "nodegroupName": "workers",
        "scalingConfig": {"minSize": 0, "maxSize": 4, "desiredSize": 2},
        "instanceTypes": ["m5.xlarge"],
        "diskSize": 50,
        "amiType": "AL2023_x86_64_STANDARD",
        "subnets": SUBNETS,
        "nodeRole": NODE_ROLE,
        "labels": {"role": "worker", naming.ENVIRONMENT_LABEL: "tutorial"},
        "tags": {
            "remote-agents:environment": "tutorial",
            "remote-agents:managed-by": "remote-agents",
            "k8s.io/cluster-autoscaler/enabled": "true",
            "k8s.io/cluster-autoscaler/remote-execution-airflow-cluster": "owned",
        },
    }


@pytest.mark.parametrize("name", EKS_SPECS)
def test_every_request_carries_the_ownership_tags(name: str) -> None:
    spec = spec_named(name)
    tags = naming.ownership_tags(spec)
    assert build_create_cluster_request(spec, CLUSTER_ROLE, SUBNETS)["tags"] == tags
    assert all(tags.items() <= r["tags"].items() for r in build_nodegroup_requests(spec, NODE_ROLE, SUBNETS))


@pytest.mark.parametrize("name", EKS_SPECS)
def test_one_nodegroup_request_per_spec_node_group(name: str) -> None:
    spec = spec_named(name)
    assert spec.eks is not None
    requests = build_nodegroup_requests(spec, NODE_ROLE, SUBNETS)
    assert [r["nodegroupName"] for r in requests] == [g.name for g in spec.eks.node_groups]


@pytest.mark.parametrize("instance_type, ami", [("m5.xlarge", "AL2023_x86_64_STANDARD"), ("m7g.large", "AL2023_ARM_64_STANDARD"), ("c7gn.xlarge", "AL2023_ARM_64_STANDARD")])
def test_ami_type_follows_the_instance_architecture(instance_type: str, ami: str) -> None:
    (request,) = build_nodegroup_requests(with_node_group(instance_types=[instance_type]), NODE_ROLE, SUBNETS)
    assert request["amiType"] == ami


def test_mixed_architectures_in_one_node_group_are_refused() -> None:
    with pytest.raises(ConfigError, match="mixes ARM"):
        build_nodegroup_requests(with_node_group(instance_types=["m5.large", "m7g.large"]), NODE_ROLE, SUBNETS)


def test_cluster_request_without_any_subnets_is_refused() -> None:
    with pytest.raises(ConfigError, match="subnet_ids"):
        build_create_cluster_request(spec_named("tutorial"), CLUSTER_ROLE)


def test_cluster_request_uses_the_spec_subnets_by_default() -> None:
    data = spec_named("tutorial").model_dump(mode="json", exclude_defaults=True)
    data["cluster"]["subnet_ids"] = ["subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
    request = build_create_cluster_request(parse_spec(data), CLUSTER_ROLE)
    assert request["resourcesVpcConfig"]["subnetIds"] == ["subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]


def test_existing_cluster_has_no_eks_requests() -> None:
    with pytest.raises(ConfigError, match="existing"):
        build_create_cluster_request(spec_named("onprem"), CLUSTER_ROLE, SUBNETS)


def test_vpc_plan_has_a_public_and_a_private_subnet_in_each_of_two_zones() -> None:
    plan = build_vpc_plan(spec_named("tutorial"))
    assert sorted((s["tier"], s["availability_zone"]) for s in plan["subnets"]) == [
        ("private", "us-east-1a"), ("private", "us-east-1b"), ("public", "us-east-1a"), ("public", "us-east-1b"),
    ]
    assert plan["node_subnets"] == [s["name"] for s in plan["subnets"] if s["tier"] == "private"]


def test_vpc_plan_subnets_are_disjoint_and_inside_the_vpc() -> None:
    plan = build_vpc_plan(spec_named("tutorial"))
    vpc = ipaddress.ip_network(plan["vpc"]["cidr_block"])
    blocks = [ipaddress.ip_network(s["cidr_block"]) for s in plan["subnets"]]
    assert all(block.subnet_of(vpc) for block in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


def test_vpc_plan_private_subnets_route_out_through_the_nat_gateway() -> None:
    plan = build_vpc_plan(spec_named("tutorial"))
    routes = {table["default_route"]: table["subnets"] for table in plan["route_tables"]}
    assert routes["nat_gateway"] == plan["node_subnets"]
    assert plan["nat_gateway"]["subnet"] in routes["internet_gateway"]


def test_vpc_plan_tags_subnets_for_the_cluster_and_load_balancers() -> None:
    plan = build_vpc_plan(spec_named("tutorial"))
    for subnet in plan["subnets"]:
        role = "kubernetes.io/role/elb" if subnet["tier"] == "public" else "kubernetes.io/role/internal-elb"
        assert subnet["tags"][role] == "1"
        assert subnet["tags"]["kubernetes.io/cluster/remote-execution-airflow-cluster"] == "shared"
        assert naming.ownership_tags(spec_named("tutorial")).items() <= subnet["tags"].items()


def test_vpc_plan_refuses_anything_but_two_distinct_zones() -> None:
    with pytest.raises(ConfigError, match="two different zones"):
        build_vpc_plan(spec_named("tutorial"), ["us-east-1a", "us-east-1a"])
