"""The EKS cluster: its IAM roles, its VPC, the cluster and its managed node groups; created or torn down.

``EnsureEksClusterOperator`` converges in two waits, as EKS requires: node groups can only be
created once the cluster is ACTIVE. Each wait defers to ``EksClusterStateTrigger`` (or polls in the
task with ``deferrable=False``); the work done so far travels through the trigger and comes back in
its event, so the final XCom lists every change. An existing cluster is adopted and verified, never
modified: a different version or subnets are reported as ``drifted``.

With ``wait_for_nodegroups=False`` the operator returns as soon as the node groups are created, and
``WaitForEksNodegroupsOperator`` waits for them: what needs only the control plane (namespace,
Secrets, IRSA) then runs during the node groups' minutes of CREATING instead of after them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from remote_agents.changes import Action, Change, diff_values
from remote_agents.errors import ClusterError, ConfigError
from remote_agents.operators.base import AWS_TEMPLATE_FIELDS, DEFAULT_DEFERRABLE, AwsOperator, as_bool, report_changes
from remote_agents.operators.irsa import delete_role, ensure_role
from remote_agents.triggers.eks_progress import DONE, FAILED, Target, cluster_progress

if TYPE_CHECKING:
    from remote_agents.hooks.aws import EksClusterHook, IamHook, VpcHook

# The AWS hooks (and with them boto3 and the amazon provider, about 0.2 s) and the triggers (Airflow's
# trigger base, about 5 ms) are imported where they are used, not here: Dag files import this
# module, and each parse would pay for them.

NAT_LIVE_STATES = ("pending", "available")
# A NAT gateway in these states still holds its elastic IP and subnet.
NAT_HOLDING_STATES = (*NAT_LIVE_STATES, "deleting")


_BY_WORD = {word: action for action in Action for word in (action.value, action.planned())}


def _changes(result: dict[str, Any]) -> list[Change]:
    """The changes carried in ``result`` (plain dicts, so they can travel through a trigger)."""
    return [Change(c["resource"], _BY_WORD[c["action"]], c["diff"], c["dry_run"]) for c in result["changes"]]


def _record(result: dict[str, Any], changes: list[Change]) -> None:
    result["changes"].extend(change.to_dict() for change in changes)


def _described(cluster: dict[str, Any]) -> dict[str, Any]:
    """The non-secret facts of a ``describe_cluster`` reply that a result carries (none of an absent one)."""
    return {"cluster_arn": cluster.get("arn"), "endpoint": cluster.get("endpoint"),
            "oidc_issuer": cluster.get("identity", {}).get("oidc", {}).get("issuer")}


class _EksOperator(AwsOperator):
    """Hooks and the wait (deferred or in-task) shared by the create and delete operators.

    :param deferrable: wait for EKS (and NAT gateways) in the triggerer; defaults to ``[operators]
        default_deferrable`` (off unless set), and without it the wait polls in the task (not templated)
    :param poll_interval: seconds between two checks of what is being waited for
    :param max_attempts: checks before a wait gives up, so one wait lasts at most ``poll_interval *
        max_attempts`` seconds (an hour by default)
    """

    def __init__(
        self, *, deferrable: bool = DEFAULT_DEFERRABLE, poll_interval: float = 30.0, max_attempts: int = 120, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts

    @cached_property
    def eks_hook(self) -> EksClusterHook:
        from remote_agents.hooks.aws import EksClusterHook

        return self.aws_hook(EksClusterHook)

    @cached_property
    def iam_hook(self) -> IamHook:
        from remote_agents.hooks.aws import IamHook

        return self.aws_hook(IamHook)

    @cached_property
    def vpc_hook(self) -> VpcHook:
        from remote_agents.hooks.aws import VpcHook

        return self.aws_hook(VpcHook)

    def _progress(self, name: str, nodegroups: list[str], target: Target, include_cluster: bool) -> tuple[str, str]:
        cluster = self.eks_hook.cluster(name)
        states = {ng: self.eks_hook.nodegroup(name, ng) for ng in nodegroups} if cluster else dict.fromkeys(nodegroups)
        return cluster_progress(name, cluster, states, target, include_cluster)

    def _await(
        self, result: dict[str, Any], stage: str, nodegroups: list[str], target: Target, include_cluster: bool = True
    ) -> None:
        """Return once ``target`` is reached; deferrable: defer (execute_complete resumes at ``stage``)."""
        name = result["facts"]["cluster_name"]
        state, message = self._progress(name, nodegroups, target, include_cluster)
        if state == FAILED:
            raise ClusterError(message)
        if state == DONE:
            return
        result["stage"] = stage
        if self.deferrable:
            from remote_agents.triggers.cluster import EksClusterStateTrigger

            self.log.info("%s; deferring until %s", message, target)
            self.defer(
                trigger=EksClusterStateTrigger(
                    cluster_name=name, nodegroup_names=nodegroups, target=target, include_cluster=include_cluster,
                    aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                    poll_interval=self.poll_interval, max_attempts=self.max_attempts, result=result,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.poll_interval * self.max_attempts + 60),
            )
        for _ in range(self.max_attempts):
            self.log.info("%s; checking again in %ss", message, self.poll_interval)
            time.sleep(self.poll_interval)
            state, message = self._progress(name, nodegroups, target, include_cluster)
            if state == FAILED:
                raise ClusterError(message)
            if state == DONE:
                return
        raise ClusterError(f"gave up after {self.poll_interval * self.max_attempts:.0f} s: {message}; raise max_attempts or re-run")

    def _resume(self, event: dict[str, Any] | None) -> dict[str, Any]:
        if not event or event.get("status") != "success":
            message = (event or {}).get("message", "no event from the trigger")
            raise ClusterError(f"waiting for EKS failed: {message}")
        return event["result"]


class EnsureEksClusterOperator(_EksOperator):
    """Create, or adopt and verify, an EKS cluster with its roles, VPC and managed node groups.

    Inputs are plain data, as ``render.cluster.build_eks_cluster_inputs(spec)`` returns them.

    Waits for ACTIVE deferred (``deferrable=True``) or in the task; with ``wait_for_nodegroups=False``
    it does not wait for the node groups (wait with ``WaitForEksNodegroupsOperator``). With
    ``create_if_missing=False`` nothing is created or changed: the cluster must exist and be ACTIVE
    (a cluster made elsewhere, used as it is). Returns ``{"changes": [...], "cluster_name",
    "cluster_arn", "endpoint", "oidc_issuer", "kubernetes_version", "vpc_id", "subnet_ids",
    "node_subnet_ids", "egress_ips", "cluster_role_arn", "node_role_arn", "nodegroup_names"}``;
    ``nodegroup_names`` are the node groups this task ensured (none when adopting), and ``egress_ips``
    the public address of our VPC's NAT gateway (none when the subnets are given or adopted), each also
    pushed under its own XCom key.

    .. code-block:: python

        from remote_agents.render.cluster import build_eks_cluster_inputs

        cluster = EnsureEksClusterOperator(
            task_id="eks_cluster",
            aws_conn_id="aws_admin",
            poll_interval=60,
            **build_eks_cluster_inputs(spec),  # cluster_request, nodegroup_requests, vpc_plan, roles, tags, region
        )

    :param cluster_request: ``EKS.create_cluster`` kwargs (``name`` and ``version`` required); a missing
        ``roleArn`` is filled from the ensured ``cluster_role``, empty ``resourcesVpcConfig.subnetIds``
        from the VPC of ``vpc_plan``
    :param nodegroup_requests: ``EKS.create_nodegroup`` kwargs, one per managed node group; missing
        ``nodeRole`` / ``subnets`` are filled from ``node_role`` and the node subnets (the VPC's
        private subnets, or the subnets given)
    :param vpc_plan: the VPC to create or adopt, as ``render.cluster.build_vpc_plan`` returns it; not
        used when ``cluster_request`` gives subnets
    :param cluster_role: ``{"role_name", "trust_policy", "managed_policy_arns"}`` of the cluster role,
        ensured when ``cluster_request`` has no ``roleArn``
    :param node_role: the same for the node role, ensured when a node group request has no ``nodeRole``
    :param tags: the ownership tags (None: ``cluster_request["tags"]``); our VPC parts and roles carry
        them and are found, and later deleted, by them
    :param create_if_missing: False creates and changes nothing: the cluster must already exist and be
        ACTIVE (templated: the strings ``"True"``/``"False"`` are accepted)
    :param wait_for_nodegroups: False returns once the node groups are created, without waiting for
        them to be ACTIVE (templated, as ``create_if_missing``)
    """

    template_fields: Sequence[str] = (
        *AWS_TEMPLATE_FIELDS, "cluster_request", "nodegroup_requests", "vpc_plan", "cluster_role", "node_role", "tags",
        "create_if_missing", "wait_for_nodegroups",
    )

    def __init__(
        self,
        *,
        cluster_request: dict[str, Any],
        nodegroup_requests: Sequence[dict[str, Any]] = (),
        vpc_plan: dict[str, Any] | None = None,
        cluster_role: dict[str, Any] | None = None,
        node_role: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        create_if_missing: bool | str = True,
        wait_for_nodegroups: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_request = cluster_request
        self.nodegroup_requests = nodegroup_requests
        self.vpc_plan = vpc_plan
        self.cluster_role = cluster_role
        self.node_role = node_role
        self.tags = tags
        self.create_if_missing = create_if_missing
        self.wait_for_nodegroups = wait_for_nodegroups

    @property
    def ownership(self) -> dict[str, str]:
        return dict(self.tags or self.cluster_request.get("tags") or {})

    def execute(self, context: Any) -> dict[str, Any]:
        return self._publish(context, self._converge())

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self._resume(event)
        return self._publish(context, self._after_cluster(result) if result.get("stage") == "cluster" else self._finish(result))

    @staticmethod
    def _publish(context: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Also under their own XCom keys, so ``output["nodegroup_names"]`` can feed a WaitForEksNodegroupsOperator
        and ``output["egress_ips"]`` an UpdateRemoteExecutionSettingsOperator."""
        ti = context.get("ti") if context else None
        if ti is not None:
            ti.xcom_push(key="nodegroup_names", value=result.get("nodegroup_names", []))
            ti.xcom_push(key="egress_ips", value=result.get("egress_ips", []))
        return result

    def _converge(self) -> dict[str, Any]:
        self._validate()
        request = self.cluster_request
        name = request["name"]
        existing = self.eks_hook.cluster(name)
        if not as_bool(self.create_if_missing):
            return self._use_as_it_is(name, existing)
        if existing is not None:
            state, message = cluster_progress(name, existing, {}, "active")
            if state == FAILED:
                raise ClusterError(message)
        changes: list[Change] = []
        cluster_role_arn = request.get("roleArn") or self._ensure_role(self.cluster_role, changes)
        needs_node_role = any(not ng.get("nodeRole") for ng in self.nodegroup_requests)
        node_role_arn = self._ensure_role(self.node_role, changes) if needs_node_role else None
        network = self._network(existing, changes)
        if existing is None:
            changes.append(self._create_cluster(cluster_role_arn, network["subnet_ids"]))
        else:
            changes.append(self._verify_cluster(existing, network["subnet_ids"]))
        facts = {
            "cluster_name": name,
            "kubernetes_version": request["version"],
            **network,
            "cluster_role_arn": cluster_role_arn or (existing or {}).get("roleArn"),
            "node_role_arn": node_role_arn,
            "nodegroup_names": [request["nodegroupName"] for request in self.nodegroup_requests],
        }
        result: dict[str, Any] = {"changes": [c.to_dict() for c in changes], "facts": facts}
        if self.is_dry_run:
            return self._plan_nodegroups(result, existing)
        return self._after_cluster(result)

    # -- stages --------------------------------------------------------------------------------

    def _after_cluster(self, result: dict[str, Any]) -> dict[str, Any]:
        self._await(result, "cluster", [], "active")
        facts = result["facts"]
        changes = [self._ensure_nodegroup(request, facts) for request in self.nodegroup_requests]
        _record(result, changes)
        if as_bool(self.wait_for_nodegroups):
            self._await(result, "nodegroups", facts["nodegroup_names"], "active")
        return self._finish(result)

    def _use_as_it_is(self, name: str, cluster: dict[str, Any] | None) -> dict[str, Any]:
        if cluster is None:
            raise ClusterError(f"EKS cluster {name} does not exist; create_if_missing is off (skip cluster creation), so it must exist already")
        if cluster["status"] != "ACTIVE":
            raise ClusterError(f"EKS cluster {name} is {cluster['status']}; with create_if_missing off it must be ACTIVE already")
        facts = {
            "cluster_name": name, **_described(cluster),
            "kubernetes_version": cluster.get("version"), "vpc_id": cluster["resourcesVpcConfig"].get("vpcId"),
            "subnet_ids": list(cluster["resourcesVpcConfig"]["subnetIds"]), "cluster_role_arn": cluster.get("roleArn"),
            "nodegroup_names": [],
        }
        return report_changes(self.log, [Change(f"eks:cluster/{name}", Action.UNCHANGED, dry_run=self.is_dry_run)], **facts)

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        facts = result["facts"]
        cluster = self.eks_hook.cluster(facts["cluster_name"]) or {}
        facts.update(_described(cluster), kubernetes_version=cluster.get("version", facts["kubernetes_version"]))
        return report_changes(self.log, _changes(result), **facts)

    def _plan_nodegroups(self, result: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        facts = result["facts"]
        changes = [
            self._ensure_nodegroup(request, facts) if existing
            else Change(f"eks:nodegroup/{request['clusterName']}/{request['nodegroupName']}", Action.CREATED, dry_run=True)
            for request in self.nodegroup_requests
        ]
        _record(result, changes)
        facts.update(_described(existing or {}))
        return report_changes(self.log, _changes(result), **facts)

    # -- parts ---------------------------------------------------------------------------------

    def _validate(self) -> None:
        request = self.cluster_request
        problems = [f"cluster_request.{key}: missing" for key in ("name", "version") if not request.get(key)]
        if not request.get("roleArn") and not self.cluster_role:
            problems.append("cluster_request.roleArn is empty and no cluster_role is given; give one of them")
        if any(not ng.get("nodeRole") for ng in self.nodegroup_requests) and not self.node_role:
            problems.append("nodegroup_requests without nodeRole need node_role; give one of them")
        if not request.get("resourcesVpcConfig", {}).get("subnetIds") and not self.vpc_plan:
            problems.append("cluster_request.resourcesVpcConfig.subnetIds is empty and no vpc_plan is given; give one of them")
        if self.vpc_plan and not self.ownership:
            problems.append("tags: a VPC is found by its ownership tags; give tags (or cluster_request.tags)")
        if problems:
            raise ConfigError(problems, source=self.task_id)

    def _ensure_role(self, role: dict[str, Any] | None, changes: list[Change]) -> str | None:
        assert role is not None  # _validate
        role_changes, arn = ensure_role(
            self.log, self.iam_hook, role_name=role["role_name"], trust_policy=role["trust_policy"],
            managed_policy_arns=role.get("managed_policy_arns", ()), tags=self.ownership,
            description="EKS role, managed by remote-agents", dry_run=self.is_dry_run,
        )
        changes.extend(role_changes)
        return arn

    def _network(self, existing: dict[str, Any] | None, changes: list[Change]) -> dict[str, Any]:
        """Subnets for the cluster and the nodes: given, or from our VPC (created unless an adopted cluster has its own)."""
        given = list(self.cluster_request.get("resourcesVpcConfig", {}).get("subnetIds") or [])
        if given:
            return {"vpc_id": None, "subnet_ids": given, "node_subnet_ids": given}
        assert self.vpc_plan is not None  # _validate
        vpc = VpcConvergence(self.vpc_hook, self.vpc_plan, self.ownership, self.is_dry_run)
        if existing is not None and not vpc.exists():
            self.log.info("Adopting cluster %s in its own subnets: no VPC carries our tags %s", existing["name"], self.ownership)
            subnets = list(existing["resourcesVpcConfig"]["subnetIds"])
            return {"vpc_id": existing["resourcesVpcConfig"].get("vpcId"), "subnet_ids": subnets, "node_subnet_ids": subnets}
        vpc_changes, network = vpc.ensure()
        changes.extend(vpc_changes)
        return network

    def _create_cluster(self, role_arn: str | None, subnet_ids: list[str]) -> Change:
        request = {
            **self.cluster_request,
            "roleArn": role_arn,
            "resourcesVpcConfig": {**self.cluster_request.get("resourcesVpcConfig", {}), "subnetIds": subnet_ids},
        }
        if not self.is_dry_run:
            self.eks_hook.call("create_cluster", doing=f"creating EKS cluster {request['name']}", **request)
        diff = diff_values({}, {"version": request["version"], "subnetIds": subnet_ids, "roleArn": role_arn})
        return Change(f"eks:cluster/{request['name']}", Action.CREATED, diff, self.is_dry_run)

    def _verify_cluster(self, cluster: dict[str, Any], subnet_ids: list[str]) -> Change:
        current = {"version": cluster.get("version"), "subnetIds": sorted(cluster["resourcesVpcConfig"]["subnetIds"])}
        desired = {"version": self.cluster_request["version"], "subnetIds": sorted(subnet_ids)}
        diff = diff_values(current, desired)
        if diff:
            self.log.warning(
                "EKS cluster %s differs from the request and is left as it is (upgrades and network changes are "
                "deliberate operations): %s", cluster["name"], diff,
            )
        return Change(f"eks:cluster/{cluster['name']}", Action.DRIFTED if diff else Action.UNCHANGED, diff, self.is_dry_run)

    def _ensure_nodegroup(self, request: dict[str, Any], facts: dict[str, Any]) -> Change:
        cluster, group = request["clusterName"], request["nodegroupName"]
        resource = f"eks:nodegroup/{cluster}/{group}"
        desired = {
            **request,
            "nodeRole": request.get("nodeRole") or facts["node_role_arn"],
            "subnets": list(request.get("subnets") or facts["node_subnet_ids"]),
        }
        current = self.eks_hook.nodegroup(cluster, group)
        if current is None:
            if not self.is_dry_run:
                self.eks_hook.call("create_nodegroup", doing=f"creating node group {group} of {cluster}", **desired)
            diff = diff_values({}, {key: desired.get(key) for key in ("scalingConfig", "instanceTypes", "amiType")})
            return Change(resource, Action.CREATED, diff, self.is_dry_run)
        keys = ("scalingConfig", "instanceTypes", "amiType")
        diff = diff_values({k: current.get(k) for k in keys}, {k: desired.get(k) for k in keys})
        if diff:
            self.log.warning("Node group %s differs from the request and is left as it is: %s", resource, diff)
        return Change(resource, Action.DRIFTED if diff else Action.UNCHANGED, diff, self.is_dry_run)


class WaitForEksNodegroupsOperator(_EksOperator):
    """Wait until managed node groups are ACTIVE: deferred (``deferrable=True``) or polling in the task.

    The second half of ``EnsureEksClusterOperator(wait_for_nodegroups=False)``: give it that task's
    ``output["nodegroup_names"]``. No names, or a dry run, returns at once. A FAILED node group fails
    the task with its health issues. Returns ``{"changes": [], "nodegroups_active": [...]}``.

    .. code-block:: python

        cluster = EnsureEksClusterOperator(task_id="ensure_cluster", wait_for_nodegroups=False, **inputs)
        nodes = WaitForEksNodegroupsOperator(
            task_id="wait_for_nodegroups", cluster_name="my-cluster", nodegroup_names=cluster.output["nodegroup_names"],
        )

    :param cluster_name: the EKS cluster the node groups belong to
    :param nodegroup_names: the node groups to wait for, e.g. ``EnsureEksClusterOperator``'s
        ``output["nodegroup_names"]`` (templated; an XComArg is resolved at run time)
    """

    template_fields: Sequence[str] = (*AWS_TEMPLATE_FIELDS, "cluster_name", "nodegroup_names")

    def __init__(self, *, cluster_name: str, nodegroup_names: Sequence[str] | Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.nodegroup_names = nodegroup_names

    def execute(self, context: Any) -> dict[str, Any]:
        names = list(self.nodegroup_names or [])
        if names and not self.is_dry_run:
            self._await({"facts": {"cluster_name": self.cluster_name}, "names": names}, "nodegroups", names, "active")
        return report_changes(self.log, [], nodegroups_active=names)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return report_changes(self.log, [], nodegroups_active=self._resume(event)["names"])


class VpcConvergence:
    """The VPC of a ``render.cluster.build_vpc_plan`` plan, each part found by ownership tags + Name."""

    def __init__(self, ec2: VpcHook, plan: dict[str, Any], ownership: dict[str, str], dry_run: bool) -> None:
        self.ec2 = ec2
        self.plan = plan
        self.ownership = ownership
        self.dry_run = dry_run
        self.changes: list[Change] = []
        self.egress_ips: list[str] = []

    def key(self, tags: dict[str, str]) -> dict[str, str]:
        return {**self.ownership, "Name": tags["Name"]}

    def first(self, kind: str, tags: dict[str, str], **filters: str) -> dict[str, Any] | None:
        found = self.ec2.find(kind, self.key(tags), **filters)
        return found[0] if found else None

    def exists(self) -> bool:
        return self.first("vpcs", self.plan["vpc"]["tags"]) is not None

    def ensure(self) -> tuple[list[Change], dict[str, Any]]:
        vpc_id = self._vpc()
        subnets = self._subnets(vpc_id)
        gateway = self._internet_gateway(vpc_id)
        nat = self._nat_gateway(vpc_id, subnets)
        for table in self.plan["route_tables"]:
            target = gateway if table["default_route"] == "internet_gateway" else nat
            self._route_table(vpc_id, table, subnets, target)
        network = {
            "vpc_id": vpc_id,
            "subnet_ids": [subnets[name] for name in self.plan["cluster_subnets"]],
            "node_subnet_ids": [subnets[name] for name in self.plan["node_subnets"]],
            "egress_ips": self.egress_ips,
        }
        return self.changes, network

    def _add(self, kind: str, name: str, action: Action, diff: dict[str, Any] | None = None) -> None:
        self.changes.append(Change(f"ec2:{kind}/{name}", action, diff or {}, self.dry_run))

    def _create(self, operation: str, what: str, **kwargs: Any) -> Any:
        return None if self.dry_run else self.ec2.call(operation, doing=f"creating {what}", **kwargs)

    def _vpc(self) -> str | None:
        spec = self.plan["vpc"]
        name = spec["tags"]["Name"]
        vpc = self.first("vpcs", spec["tags"])
        if vpc is None:
            reply = self._create("create_vpc", f"VPC {name}", CidrBlock=spec["cidr_block"],
                                 TagSpecifications=self.ec2.tag_specifications("vpc", spec["tags"]))
            vpc_id = reply["Vpc"]["VpcId"] if reply else None
            if vpc_id:
                self._set_dns(vpc_id, ("EnableDnsSupport", "EnableDnsHostnames"))
            self._add("vpc", name, Action.CREATED, diff_values({}, {"cidr_block": spec["cidr_block"]}))
            return vpc_id
        vpc_id = vpc["VpcId"]
        wrong = [
            attribute for attribute, wanted in (("EnableDnsSupport", spec["enable_dns_support"]), ("EnableDnsHostnames", spec["enable_dns_hostnames"]))
            if wanted and not self.ec2.call("describe_vpc_attribute", doing=f"reading VPC {name}", VpcId=vpc_id,
                                            Attribute=attribute[0].lower() + attribute[1:])[attribute]["Value"]
        ]
        if wrong and not self.dry_run:
            self._set_dns(vpc_id, wrong)
        self._add("vpc", name, Action.UPDATED if wrong else Action.UNCHANGED, {a: {"from": False, "to": True} for a in wrong})
        return vpc_id

    def _set_dns(self, vpc_id: str, attributes: Sequence[str]) -> None:
        # EC2 changes one VPC attribute per call.
        for attribute in attributes:
            self.ec2.call("modify_vpc_attribute", doing=f"setting {attribute} on {vpc_id}", VpcId=vpc_id, **{attribute: {"Value": True}})

    def _subnets(self, vpc_id: str | None) -> dict[str, str | None]:
        from remote_agents.hooks.aws import tag_dict

        existing = {tag_dict(s.get("Tags")).get("Name"): s for s in self.ec2.find("subnets", self.ownership, vpc_id=vpc_id)} if vpc_id else {}
        ids: dict[str, str | None] = {}
        for spec in self.plan["subnets"]:
            subnet = existing.get(spec["name"])
            if subnet is None:
                reply = self._create("create_subnet", f"subnet {spec['name']}", VpcId=vpc_id, CidrBlock=spec["cidr_block"],
                                     AvailabilityZone=spec["availability_zone"],
                                     TagSpecifications=self.ec2.tag_specifications("subnet", spec["tags"]))
                subnet = reply["Subnet"] if reply else {"MapPublicIpOnLaunch": False}
                action = Action.CREATED
                diff = diff_values({}, {"cidr_block": spec["cidr_block"], "availability_zone": spec["availability_zone"]})
            else:
                action, diff = Action.UNCHANGED, diff_values(
                    {"cidr_block": subnet["CidrBlock"], "availability_zone": subnet["AvailabilityZone"]},
                    {"cidr_block": spec["cidr_block"], "availability_zone": spec["availability_zone"]},
                )
                action = Action.DRIFTED if diff else action
            ids[spec["name"]] = subnet.get("SubnetId")
            if spec["map_public_ip_on_launch"] and not subnet.get("MapPublicIpOnLaunch"):
                if not self.dry_run:
                    self.ec2.call("modify_subnet_attribute", doing=f"making {spec['name']} public", SubnetId=subnet["SubnetId"],
                                  MapPublicIpOnLaunch={"Value": True})
                diff["map_public_ip_on_launch"] = {"from": False, "to": True}
                action = Action.UPDATED if action is Action.UNCHANGED else action
            self._add("subnet", spec["name"], action, diff)
        return ids

    def _internet_gateway(self, vpc_id: str | None) -> str | None:
        tags = self.plan["internet_gateway"]["tags"]
        gateway = self.first("internet_gateways", tags)
        action = Action.UNCHANGED
        if gateway is None:
            reply = self._create("create_internet_gateway", f"internet gateway {tags['Name']}",
                                 TagSpecifications=self.ec2.tag_specifications("internet-gateway", tags))
            gateway, action = (reply["InternetGateway"] if reply else {}), Action.CREATED
        gateway_id = gateway.get("InternetGatewayId")
        attached = any(a.get("VpcId") == vpc_id for a in gateway.get("Attachments", []))
        if not attached:
            if gateway_id and vpc_id and not self.dry_run:
                self.ec2.call("attach_internet_gateway", doing=f"attaching {gateway_id} to {vpc_id}", InternetGatewayId=gateway_id, VpcId=vpc_id)
            action = Action.UPDATED if action is Action.UNCHANGED else action
        self._add("internet-gateway", tags["Name"], action, {} if attached else {"attached_to": {"from": None, "to": vpc_id}})
        return gateway_id

    def _nat_gateway(self, vpc_id: str | None, subnets: dict[str, str | None]) -> str | None:
        spec = self.plan["nat_gateway"]
        tags = spec["tags"]
        address = self.first("addresses", tags)
        if address is None:
            address = self._create("allocate_address", f"elastic IP {tags['Name']}", Domain="vpc",
                                   TagSpecifications=self.ec2.tag_specifications("elastic-ip", tags)) or {}
            self._add("elastic-ip", tags["Name"], Action.CREATED)
        else:
            self._add("elastic-ip", tags["Name"], Action.UNCHANGED)
        # The agents' traffic to Astro leaves from this address: Astro's allowed IP ranges need it.
        self.egress_ips = [address["PublicIp"]] if address.get("PublicIp") else []
        live = [n for n in self.ec2.find("nat_gateways", self.key(tags), vpc_id=vpc_id) if n["State"] in NAT_LIVE_STATES] if vpc_id else []
        if live:
            self._add("nat-gateway", tags["Name"], Action.UNCHANGED)
            return live[0]["NatGatewayId"]
        # Real AWS keeps the NAT gateway "pending" for a minute or two; routes to it are accepted meanwhile.
        reply = self._create("create_nat_gateway", f"NAT gateway {tags['Name']}", SubnetId=subnets[spec["subnet"]],
                             AllocationId=address.get("AllocationId"),
                             TagSpecifications=self.ec2.tag_specifications("natgateway", tags))
        self._add("nat-gateway", tags["Name"], Action.CREATED, diff_values({}, {"subnet": spec["subnet"]}))
        return reply["NatGateway"]["NatGatewayId"] if reply else None

    def _route_table(self, vpc_id: str | None, spec: dict[str, Any], subnets: dict[str, str | None], target: str | None) -> None:
        table = self.first("route_tables", spec["tags"], vpc_id=vpc_id) if vpc_id else None
        action = Action.UNCHANGED
        if table is None:
            reply = self._create("create_route_table", f"route table {spec['name']}", VpcId=vpc_id,
                                 TagSpecifications=self.ec2.tag_specifications("route-table", spec["tags"]))
            table, action = (reply["RouteTable"] if reply else {}), Action.CREATED
        table_id = table.get("RouteTableId")
        target_key = "GatewayId" if spec["default_route"] == "internet_gateway" else "NatGatewayId"
        default = next((r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"), None)
        diff: dict[str, Any] = {}
        if default is None or default.get(target_key) != target:
            diff["default_route"] = {"from": default and (default.get("GatewayId") or default.get("NatGatewayId")), "to": target}
            if table_id and target and not self.dry_run:
                operation = "create_route" if default is None else "replace_route"
                self.ec2.call(operation, doing=f"routing 0.0.0.0/0 of {spec['name']} to {target}", RouteTableId=table_id,
                              DestinationCidrBlock="0.0.0.0/0", **{target_key: target})
        associated = {a.get("SubnetId") for a in table.get("Associations", [])}
        missing = [name for name in spec["subnets"] if subnets.get(name) not in associated or subnets.get(name) is None]
        if missing:
            diff["subnets"] = {"from": sorted(n for n in spec["subnets"] if n not in missing), "to": list(spec["subnets"])}
            for name in missing if table_id and not self.dry_run else []:
                self.ec2.call("associate_route_table", doing=f"associating {name} with {spec['name']}", RouteTableId=table_id, SubnetId=subnets[name])
        if diff and action is Action.UNCHANGED:
            action = Action.UPDATED
        self._add("route-table", spec["name"], action, diff)

    def delete_nat_gateways(self) -> list[str]:
        """Start deleting the NAT gateways of our VPCs; the IDs to wait for before ``delete`` (none in a dry run).

        Those still deleting from an earlier, interrupted teardown are waited for too.
        """
        holding = []
        for vpc in self.ec2.find("vpcs", self.ownership):
            for nat in self.ec2.find("nat_gateways", self.ownership, vpc_id=vpc["VpcId"]):
                if nat["State"] in NAT_LIVE_STATES:
                    if not self.dry_run:
                        self.ec2.call("delete_nat_gateway", doing=f"deleting NAT gateway {nat['NatGatewayId']}", missing_ok=True,
                                      NatGatewayId=nat["NatGatewayId"])
                    self._add("nat-gateway", _name(nat), Action.DELETED)
                if nat["State"] in NAT_HOLDING_STATES:
                    holding.append(nat["NatGatewayId"])
        return [] if self.dry_run else holding

    def delete(self, log: Any) -> list[Change]:
        """Delete every other VPC part carrying our tags, dependents first; parts without them are left alone.

        Run after ``delete_nat_gateways`` and the wait for its NAT gateways.
        """
        vpcs = self.ec2.find("vpcs", self.ownership)
        if not vpcs:
            log.info("No VPC carries the ownership tags %s; VPCs without them were not created by this environment", self.ownership)
            return [Change(f"ec2:vpc/(tagged {self.ownership})", Action.ABSENT, dry_run=self.dry_run)]
        for vpc in vpcs:
            self._delete_vpc(vpc["VpcId"], _name(vpc))
        return self.changes

    def _delete_vpc(self, vpc_id: str, name: str) -> None:
        call = (lambda *a, **k: None) if self.dry_run else self.ec2.call
        for address in self.ec2.find("addresses", self.ownership):
            call("release_address", doing=f"releasing elastic IP {address['AllocationId']}", missing_ok=True, AllocationId=address["AllocationId"])
            self._add("elastic-ip", _name(address), Action.DELETED)
        for table in self.ec2.find("route_tables", self.ownership, vpc_id=vpc_id):
            for association in table.get("Associations", []):
                if not association.get("Main"):
                    call("disassociate_route_table", doing=f"detaching route table {table['RouteTableId']}", missing_ok=True,
                         AssociationId=association["RouteTableAssociationId"])
            call("delete_route_table", doing=f"deleting route table {table['RouteTableId']}", missing_ok=True, RouteTableId=table["RouteTableId"])
            self._add("route-table", _name(table), Action.DELETED)
        for gateway in self.ec2.find("internet_gateways", self.ownership):
            for attachment in gateway.get("Attachments", []):
                call("detach_internet_gateway", doing=f"detaching {gateway['InternetGatewayId']}", missing_ok=True,
                     InternetGatewayId=gateway["InternetGatewayId"], VpcId=attachment["VpcId"])
            call("delete_internet_gateway", doing=f"deleting {gateway['InternetGatewayId']}", missing_ok=True,
                 InternetGatewayId=gateway["InternetGatewayId"])
            self._add("internet-gateway", _name(gateway), Action.DELETED)
        for subnet in self.ec2.find("subnets", self.ownership, vpc_id=vpc_id):
            call("delete_subnet", doing=f"deleting subnet {subnet['SubnetId']}", missing_ok=True, SubnetId=subnet["SubnetId"])
            self._add("subnet", _name(subnet), Action.DELETED)
        call("delete_vpc", doing=f"deleting VPC {vpc_id} (anything left in it that we did not create blocks this)", missing_ok=True, VpcId=vpc_id)
        self._add("vpc", name, Action.DELETED)


def _name(resource: dict[str, Any]) -> str:
    from remote_agents.hooks.aws import tag_dict

    tags = tag_dict(resource.get("Tags"))
    return tags.get("Name") or next(v for k, v in resource.items() if k.endswith("Id") and isinstance(v, str))


class DeleteEksClusterOperator(_EksOperator):
    """Tear down what ``EnsureEksClusterOperator`` created: node groups, cluster, VPC parts, EKS roles.

    Only resources carrying every one of ``tags`` (the ownership tags) are deleted; a cluster, node
    group, role or VPC without them is left alone and listed under ``skipped`` (our node groups in
    someone else's cluster are still deleted). A cluster of ours that other environments still use
    (``needed_by``) is kept whole, with its node groups, VPC and roles, and listed under ``kept``.
    Already-gone resources are ``absent``. Node group and cluster deletion take minutes on AWS, and a
    NAT gateway keeps its elastic IP and subnet for about a minute after its deletion, so the rest of
    the VPC waits for it: the waits defer (``deferrable=True``) or poll in the task.

    .. code-block:: python

        DeleteEksClusterOperator(
            task_id="delete_eks_cluster",
            cluster_name="my-cluster",
            role_names=["my-env-eks-cluster", "my-env-eks-node"],
            tags={"remote-agents:environment": "my-env", "remote-agents:managed-by": "remote-agents"},
        )

    :param cluster_name: the EKS cluster to delete
    :param tags: the ownership tags; only resources carrying every one of them are deleted (required,
        not empty)
    :param role_names: IAM roles to delete with the cluster (its cluster and node roles), if they carry ``tags``
    :param delete_vpc: also delete the VPC parts carrying ``tags`` (templated: the strings
        ``"True"``/``"False"`` are accepted)
    :param needed_by: the other environments that run on this cluster; while there are any, it is kept
    """

    template_fields: Sequence[str] = (
        *AWS_TEMPLATE_FIELDS, "cluster_name", "role_names", "tags", "delete_vpc", "needed_by",
    )

    def __init__(
        self,
        *,
        cluster_name: str,
        tags: dict[str, str],
        role_names: Sequence[str] = (),
        delete_vpc: bool | str = True,
        needed_by: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.tags = tags
        self.role_names = role_names
        self.delete_vpc = delete_vpc
        self.needed_by = needed_by

    def execute(self, context: Any) -> dict[str, Any]:
        from remote_agents.hooks.aws import owns

        if not self.tags:
            raise ConfigError(["tags: give the ownership tags; without them everything would look like ours"], source=self.task_id)
        result: dict[str, Any] = {"changes": [], "facts": {"cluster_name": self.cluster_name, "skipped": []}}
        resource = f"eks:cluster/{self.cluster_name}"
        cluster = self.eks_hook.cluster(self.cluster_name)
        if cluster is None:
            _record(result, [Change(resource, Action.ABSENT, dry_run=self.is_dry_run)])
            return self._after_cluster(result)
        ours = owns(cluster.get("tags") or {}, self.tags)
        if ours and self.needed_by:
            self.log.info("%s is still used by %s: kept, with its node groups, VPC and roles", resource,
                          ", ".join(self.needed_by))
            result["facts"]["kept"] = {resource: list(self.needed_by)}
            return report_changes(self.log, _changes(result), **result["facts"])
        if not ours:
            self.log.warning("%s does not carry the ownership tags %s: not created by this environment, left alone "
                             "(our node groups in it are deleted)", resource, self.tags)
            result["facts"]["skipped"].append(resource)
        groups = self._delete_nodegroups(result)
        if not self.is_dry_run:
            self._await(result, "nodegroups", groups, "deleted", include_cluster=False)
        return self._after_nodegroups(result)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self._resume(event)
        if result.get("stage") == "nodegroups":
            return self._after_nodegroups(result)
        if result.get("stage") == "nat_gateways":
            return self._after_nat_gateways(result)
        return self._after_cluster(result)

    def _resume(self, event: dict[str, Any] | None) -> dict[str, Any]:
        result = (event or {}).get("result") or {}
        if result.get("stage") == "nat_gateways" and (event or {}).get("status") != "success":
            from remote_agents.triggers.vpc import still_deleting

            raise ClusterError(still_deleting(result["nat_gateway_ids"], (event or {}).get("message", "no event from the trigger")))
        return super()._resume(event)

    def _delete_nodegroups(self, result: dict[str, Any]) -> list[str]:
        from remote_agents.hooks.aws import owns

        deleting = []
        for group in self.eks_hook.nodegroup_names(self.cluster_name):
            resource = f"eks:nodegroup/{self.cluster_name}/{group}"
            nodegroup = self.eks_hook.nodegroup(self.cluster_name, group)
            if nodegroup is None:
                continue
            if not owns(nodegroup.get("tags") or {}, self.tags):
                self.log.warning("%s does not carry the ownership tags %s: left alone", resource, self.tags)
                result["facts"]["skipped"].append(resource)
                continue
            if nodegroup["status"] != "DELETING" and not self.is_dry_run:
                self.eks_hook.call("delete_nodegroup", doing=f"deleting {resource}", missing_ok=True,
                                   clusterName=self.cluster_name, nodegroupName=group)
            _record(result, [Change(resource, Action.DELETED, dry_run=self.is_dry_run)])
            deleting.append(group)
        return deleting

    def _after_nodegroups(self, result: dict[str, Any]) -> dict[str, Any]:
        resource = f"eks:cluster/{self.cluster_name}"
        if resource in result["facts"]["skipped"]:
            return self._after_cluster(result)
        if not self.is_dry_run:
            self.eks_hook.call("delete_cluster", doing=f"deleting {resource} (delete its remaining node groups first)",
                               missing_ok=True, name=self.cluster_name)
            _record(result, [Change(resource, Action.DELETED)])
            self._await(result, "cluster", [], "deleted")
        else:
            _record(result, [Change(resource, Action.DELETED, dry_run=True)])
        return self._after_cluster(result)

    def _after_cluster(self, result: dict[str, Any]) -> dict[str, Any]:
        if as_bool(self.delete_vpc):
            vpc = VpcConvergence(self.vpc_hook, {}, self.tags, self.is_dry_run)
            holding = vpc.delete_nat_gateways()
            _record(result, vpc.changes)
            if holding:
                self._await_nat_gateways(result, holding)
        return self._after_nat_gateways(result)

    def _await_nat_gateways(self, result: dict[str, Any], nat_gateway_ids: list[str]) -> None:
        """Return once the NAT gateways are deleted; deferrable: defer (execute_complete resumes after them)."""
        from remote_agents.triggers.vpc import NatGatewaysDeletedTrigger, wait_in_task

        result.update(stage="nat_gateways", nat_gateway_ids=nat_gateway_ids)
        if self.deferrable:
            self.log.info("NAT gateways %s are deleting; deferring until they are deleted", nat_gateway_ids)
            self.defer(
                trigger=NatGatewaysDeletedTrigger(
                    nat_gateway_ids=nat_gateway_ids, result=result, waiter_delay=self.poll_interval,
                    waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.poll_interval * self.max_attempts + 60),
            )
        wait_in_task(self.vpc_hook, nat_gateway_ids, self.poll_interval, self.max_attempts)

    def _after_nat_gateways(self, result: dict[str, Any]) -> dict[str, Any]:
        changes = []
        if as_bool(self.delete_vpc):
            changes.extend(VpcConvergence(self.vpc_hook, {}, self.tags, self.is_dry_run).delete(self.log))
        for role_name in self.role_names:
            change = delete_role(self.log, self.iam_hook, role_name, self.tags, self.is_dry_run)
            if change is None:
                result["facts"]["skipped"].append(f"iam:role/{role_name}")
            else:
                changes.append(change)
        _record(result, changes)
        return report_changes(self.log, _changes(result), **result["facts"])
