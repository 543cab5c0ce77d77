"""Drift: the live state of an environment compared with what its spec renders. Pure.

Each ``compare_*`` function takes what the drift Dag read (plain dataclasses, built in
``gather.py``) and the desired state the pure renderers produce, and returns one ``Finding`` per
difference (check ``diagnose.DRIFT``); an empty list means no drift. Nothing is repaired here:
the fix of a finding names how (usually the bootstrap Dag; it skips helm when the release's values
already match, so a chart object edited by hand needs its force_upgrade param).

Areas, one drift task each: the EKS cluster (Kubernetes version, node groups), its OIDC provider,
the namespace (labels), the Helm release (chart version and values), the chart's objects (each
field the release's manifest sets, against the live object), the agents' ServiceAccounts (IRSA role
annotation), the IRSA roles (trust, permission policy, anything else attached), the Secrets the
chart references (present, holding a token Astro still lists), and the Deployment's Remote
Execution settings in Astro (enabled, allowed IP ranges, task log bucket).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from remote_agents import naming
from remote_agents.changes import REDACTED, diff_values
from remote_agents.health.diagnose import DRIFT, Finding
from remote_agents.render.policies import normalize_policy
from remote_agents.render.values import ROLE_ARN_ANNOTATION
from remote_agents.spec import EnvironmentSpec

CLUSTER = "cluster"
OIDC_PROVIDER = "oidc_provider"
NAMESPACE = "namespace"
RELEASE = "release"
CHART_OBJECTS = "chart_objects"
SERVICE_ACCOUNTS = "service_accounts"
IRSA_ROLES = "irsa_roles"
SECRETS = "secrets"
REMOTE_EXECUTION = "remote_execution"
AREAS = (CLUSTER, OIDC_PROVIDER, NAMESPACE, RELEASE, CHART_OBJECTS, SERVICE_ACCOUNTS, IRSA_ROLES, SECRETS,
         REMOTE_EXECUTION)

BOOTSTRAP = "re-run remote_agents_bootstrap__<env>"
FORCE_UPGRADE = f"{BOOTSTRAP} with force_upgrade=true (helm puts back what its manifest sets)"
# Metadata the API server, helm and kubectl write on live objects; never in a chart's manifest,
# so the subset comparison skips it anyway: named so a chart that renders one is not flagged.
SERVER_METADATA = frozenset({"resourceVersion", "uid", "generation", "creationTimestamp", "managedFields",
                             "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"})
# The service_accounts area reports this one, with its own fix; once is enough.
_ROLE_ARN_PATH = f"metadata.annotations.{ROLE_ARN_ANNOTATION}"
TOOL_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/restartedAt",
                    "kubectl.kubernetes.io/last-applied-configuration", "meta.helm.sh/")
# Chart values that carry a secret inline (the spec never sets them: Secrets are referenced by name),
# and env var names that usually hold one: their values are compared but never shown.
INLINE_SECRET_KEYS = frozenset({"agentToken", "imagePullSecretData", "sentinelAuthSecret"})
_SECRET_ENV = re.compile(r"(?i)(password|passwd|token|secret_access_key|secret_key|api_key|apikey|private_key|credentials?)$")
MAX_TEXT = 160


def areas_for(spec: EnvironmentSpec) -> list[str]:
    """The areas that apply to ``spec``: the cluster only when it is EKS, the OIDC provider and the
    roles only with IRSA on EKS (IRSA roles with IRSA at all)."""
    skipped = set()
    if spec.eks is None:
        skipped |= {CLUSTER, OIDC_PROVIDER}
    if not spec.irsa:
        skipped |= {OIDC_PROVIDER, IRSA_ROLES}
    return [area for area in AREAS if area not in skipped]


# -- live state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodegroupState:
    """A managed node group as EKS describes it (``describe_nodegroup``)."""

    name: str
    status: str
    scaling: Mapping[str, int]
    instance_types: tuple[str, ...]
    ami_type: str | None
    disk_size: int | None
    labels: Mapping[str, str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class ClusterState:
    """The EKS cluster; ``version`` None means no such cluster."""

    name: str
    version: str | None
    status: str | None = None
    nodegroups: tuple[NodegroupState, ...] = ()


@dataclass(frozen=True)
class OidcProviderState:
    """The IAM OIDC provider of the cluster's issuer; ``issuer`` None: no cluster, so no issuer."""

    issuer: str | None
    exists: bool
    client_ids: tuple[str, ...] = ()
    thumbprints: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamespaceState:
    name: str
    exists: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteExecutionState:
    """The Deployment's ``remoteExecution`` settings as the Astro API returns them."""

    deployment_id: str
    enabled: bool
    allowed_ip_ranges: tuple[str, ...] = ()
    task_log_bucket: str | None = None
    task_log_url_pattern: str | None = None


@dataclass(frozen=True)
class ReleaseState:
    """The Helm release as installed; ``chart_version`` None means no such release."""

    name: str
    namespace: str
    chart_version: str | None
    values: Mapping[str, Any] = field(default_factory=dict)  # user-supplied values (helm get values)


@dataclass(frozen=True)
class ChartObjectState:
    """One object of the release's manifest (``helm get manifest``) and its live copy (None: missing)."""

    kind: str
    name: str
    namespace: str | None
    rendered: Mapping[str, Any]
    live: Mapping[str, Any] | None


@dataclass(frozen=True)
class ServiceAccountState:
    name: str
    namespace: str
    exists: bool
    role_arn: str | None = None  # the eks.amazonaws.com/role-arn annotation


@dataclass(frozen=True)
class RoleState:
    """An IRSA role as IAM holds it; policies as returned (dict or URL-encoded JSON)."""

    name: str
    exists: bool
    trust_policy: Mapping[str, Any] | str | None = None
    inline_policies: Mapping[str, Mapping[str, Any] | str] = field(default_factory=dict)
    attached_policy_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretState:
    """A Secret the chart references by name. ``token_live`` None: no token tracked, or Astro not asked."""

    name: str
    namespace: str
    purpose: str  # "agent token", "registry pull", "AWS credentials"
    exists: bool
    expected_keys: tuple[str, ...]
    present_keys: tuple[str, ...] = ()  # data keys only, never values
    tracks_token: bool = False  # the bootstrap records the token's id in an annotation
    token_id: str | None = None
    token_live: bool | None = None
    api_error: str | None = None


# -- desired state not covered by the renderers ---------------------------------------------------


def desired_role_annotations(spec: EnvironmentSpec, role_arns: Mapping[str | None, str] | None) -> dict[str, str | None]:
    """The role ARN each agent ServiceAccount should carry (keys of ``role_arns`` as in
    ``naming.irsa_role_names``: None = one role for all); None where no annotation belongs."""
    arns = role_arns or {}
    return {
        workload.service_account: arns.get(None) or arns.get(workload.component)
        for workload in naming.agent_workloads(spec, include_sentinel=False)
    }


# -- comparisons ---------------------------------------------------------------------------------


def compare_release(live: ReleaseState, desired_values: Mapping[str, Any], desired_chart_version: str) -> list[Finding]:
    """Chart version and values of the release against ``build_values(spec, role_arns)``."""
    component = f"Helm release {live.namespace}/{live.name}"
    if live.chart_version is None:
        return [Finding(DRIFT, component, "not installed", "helm finds no such release", BOOTSTRAP)]
    findings = []
    if live.chart_version != desired_chart_version:
        findings.append(Finding(
            DRIFT, component, f"chart {live.chart_version} is installed, the spec says {desired_chart_version}",
            "helm list", f"{BOOTSTRAP} (its chart_version param defaults to the spec's) or change chart.version",
        ))
    findings.extend(
        Finding(DRIFT, component, f"value {path} differs from the rendered values",
                f"{_short(change['from'])} -> spec {_short(change['to'])}",
                f"{BOOTSTRAP} to install the rendered values (someone ran helm upgrade by hand?), "
                "or put the change in the spec")
        for path, change in values_diff(live.values, desired_values).items()
    )
    return findings


def values_diff(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{path: {"from", "to"}}`` of two value trees, named lists keyed by name, secrets redacted.

    Lists of objects with a unique ``name`` (commonEnv, workers, env) become maps, so a changed
    variable reads ``commonEnv.X.value`` instead of the whole list.
    """
    current, wanted = _keyed(live), _keyed(desired)
    return diff_values(current, wanted, _secret_paths(current) | _secret_paths(wanted))


def compare_chart_objects(objects: Iterable[ChartObjectState]) -> list[Finding]:
    """Each object the release's manifest holds against the live one: one finding per field the
    manifest sets that the live object has otherwise (helm compares only values, so a hand edit of a
    chart object stays invisible to it), and one per missing object."""
    findings = []
    for obj in objects:
        component = f"{obj.kind} {obj.namespace + '/' if obj.namespace else ''}{obj.name}"
        if obj.live is None:
            findings.append(Finding(DRIFT, component, "missing", "in the release's manifest, not in the cluster",
                                    FORCE_UPGRADE))
            continue
        findings.extend(
            Finding(DRIFT, component, f"{path} differs from the release's manifest",
                    f"{_short(change['from'])} -> manifest {_short(change['to'])}",
                    f"{FORCE_UPGRADE}; someone edited it by hand (kubectl edit/scale/set)?")
            for path, change in manifest_diff(obj.live, obj.rendered).items()
            if not (obj.kind == "ServiceAccount" and path == _ROLE_ARN_PATH)
        )
    return findings


def manifest_diff(live: Mapping[str, Any], rendered: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{path: {"from", "to"}}`` of the fields ``rendered`` sets that ``live`` has otherwise, secrets redacted.

    Only what the manifest sets is compared: the server adds defaults and status. Named lists
    (containers, env) are keyed by name as in ``values_diff``; other lists compare item by item.
    """
    wanted, current = _keyed(_without_tool_metadata(rendered)), _keyed(live)
    secret = _secret_paths(wanted)
    return {path: {"from": REDACTED if path in secret and have is not None else have,
                   "to": REDACTED if path in secret else want}
            for path, (have, want) in _subset_diff(current, wanted, "").items()}


def _without_tool_metadata(rendered: Mapping[str, Any]) -> dict[str, Any]:
    meta = dict(rendered.get("metadata") or {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    if isinstance(meta.get("annotations"), Mapping):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if not k.startswith(TOOL_ANNOTATIONS)}
    return {**{k: v for k, v in rendered.items() if k != "status"}, "metadata": meta}


def _subset_diff(live: Any, wanted: Any, path: str) -> dict[str, tuple[Any, Any]]:
    if isinstance(wanted, Mapping):
        have = live if isinstance(live, Mapping) else {}
        if not isinstance(live, Mapping) and live is not None:
            return {path: (live, wanted)}
        found: dict[str, tuple[Any, Any]] = {}
        for key, item in wanted.items():
            found.update(_subset_diff(have.get(key), item, f"{path}.{key}" if path else str(key)))
        return found
    if isinstance(wanted, list) and isinstance(live, list) and len(live) == len(wanted):
        found = {}
        for index, (have_item, want_item) in enumerate(zip(live, wanted, strict=True)):
            found.update(_subset_diff(have_item, want_item, f"{path}[{index}]"))
        return found
    # The API server omits fields set to their zero value ("", 0, false, empty), so absent is equal to them.
    if live == wanted or (live is None and not wanted):
        return {}
    # It also rewrites resource quantities in canonical form ("0.5" -> "500m", "1024Mi" -> "1Gi").
    if _QUANTITY_PATH.search(path) and quantity(live) is not None and quantity(live) == quantity(wanted):
        return {}
    return {path: (live, wanted)}


_QUANTITY_PATH = re.compile(r"(^|\.)resources\.(requests|limits)\.[^.]+$")
_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")
_SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
           "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           **{suffix: 1024 ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)}}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity's amount (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824); None if it is not one."""
    match = _QUANTITY.fullmatch(str(value)) if isinstance(value, (str, int, float)) else None
    if not match:
        return None
    try:
        return Decimal(match[1]) * _SUFFIX[match[2] or ""]
    except InvalidOperation:
        return None


def compare_service_accounts(live: Iterable[ServiceAccountState], desired_role_arns: Mapping[str, str | None]) -> list[Finding]:
    """The role annotation of each agent ServiceAccount; ``desired_role_arns`` by ServiceAccount name
    (None: no annotation, as with static credentials)."""
    findings = []
    for account in live:
        if account.name not in desired_role_arns:
            continue
        expected = desired_role_arns[account.name]
        component = f"ServiceAccount {account.namespace}/{account.name}"
        annotate = (f"{BOOTSTRAP} (it upgrades the release to put the annotation back), then restart the "
                    "Deployment of any Pod started without it")
        if not account.exists:
            findings.append(Finding(DRIFT, component, "missing", "the Kubernetes API has no such ServiceAccount",
                                    f"{BOOTSTRAP}; if the release is unchanged, helm upgrade it to recreate it"))
        elif expected and account.role_arn is None:
            findings.append(Finding(DRIFT, component, "the IRSA role annotation was removed",
                                    f"no eks.amazonaws.com/role-arn; the spec gives {expected}",
                                    "new Pods get no AWS credentials: " + annotate))
        elif expected and account.role_arn != expected:
            findings.append(Finding(DRIFT, component, "annotated with another IAM role",
                                    f"eks.amazonaws.com/role-arn={account.role_arn}; the spec gives {expected}",
                                    annotate))
        elif not expected and account.role_arn:
            findings.append(Finding(DRIFT, component, "annotated with an IAM role the spec does not give",
                                    f"eks.amazonaws.com/role-arn={account.role_arn}; identity.mode is not irsa",
                                    f"kubectl -n {account.namespace} annotate serviceaccount {account.name} "
                                    "eks.amazonaws.com/role-arn-, or set identity.mode: irsa in the spec"))
    return findings


def compare_roles(live: Iterable[RoleState], desired: Mapping[str | None, Mapping[str, Any]]) -> list[Finding]:
    """Each IRSA role against ``build_irsa_policies(spec, issuer, account)``: trust, its one inline
    policy, and no other policy (an extra one widens what the agents may do)."""
    wanted = {role["role_name"]: role for role in desired.values()}
    findings = []
    for role in live:
        if role.name not in wanted:
            continue
        spec_role = wanted[role.name]
        component = f"IAM role {role.name}"
        if not role.exists:
            findings.append(Finding(DRIFT, component, "missing", "IAM has no such role",
                                    f"{BOOTSTRAP} (ensure_irsa_role recreates it)"))
            continue
        trust = _statement_diff(role.trust_policy, spec_role["trust_policy"])
        if trust:
            findings.append(Finding(DRIFT, component, "trust policy differs from the spec", trust,
                                    f"{BOOTSTRAP} to restore the trust of exactly the agents' ServiceAccounts"))
        name = spec_role["policy_name"]
        current = role.inline_policies.get(name)
        if current is None:
            findings.append(Finding(DRIFT, component, f"permission policy {name} is missing",
                                    f"inline policies: {', '.join(sorted(role.inline_policies)) or 'none'}",
                                    f"{BOOTSTRAP}; without it the agents cannot reach XCom, logs or secrets"))
        else:
            permissions = _statement_diff(current, spec_role["permission_policy"])
            if permissions:
                findings.append(Finding(DRIFT, component, f"permission policy {name} differs from the spec",
                                        permissions, f"{BOOTSTRAP} to put back the rendered policy"))
        extra = sorted(set(role.inline_policies) - {name}) + sorted(role.attached_policy_arns)
        if extra:
            findings.append(Finding(DRIFT, component, "has policies the spec does not give",
                                    f"also attached: {', '.join(extra)}",
                                    "remove them (least privilege); give the agents more access through the spec's backends"))
    return findings


def compare_secrets(live: Iterable[SecretState]) -> list[Finding]:
    """Each Secret present with its key, and a tracked token still live in Astro."""
    findings = []
    for secret in live:
        component = f"{secret.purpose} Secret {secret.namespace}/{secret.name}"
        if not secret.exists:
            findings.append(Finding(DRIFT, component, "missing", "the Kubernetes API has no such Secret",
                                    f"{BOOTSTRAP} (it writes a new token into it); Pods that start now fail to pull or log in"))
        elif missing := sorted(set(secret.expected_keys) - set(secret.present_keys)):
            findings.append(Finding(DRIFT, component, f"has no key {', '.join(missing)}",
                                    f"its data keys: {', '.join(sorted(secret.present_keys)) or 'none'}",
                                    f"{BOOTSTRAP} to rewrite it"))
        elif secret.tracks_token and not secret.token_id:
            findings.append(Finding(DRIFT, component, "holds a token the bootstrap did not record",
                                    "no remote-agents.astronomer.io/astro-token-id annotation",
                                    f"{BOOTSTRAP} with rotate_tokens=true to issue a tracked token"))
        elif secret.tracks_token and secret.token_live is None and secret.api_error:
            findings.append(Finding(DRIFT, component, f"could not ask Astro about token {secret.token_id}",
                                    secret.api_error, "check the Astro API connection (astro.connection_id)"))
        elif secret.tracks_token and secret.token_live is False:
            findings.append(Finding(DRIFT, component, f"token {secret.token_id} is revoked or expired in Astro",
                                    "the Astro API no longer lists it as live",
                                    f"{BOOTSTRAP} (a dead token is replaced; rotate_tokens=true replaces a live one)"))
    return findings


def compare_cluster(live: ClusterState, desired_version: str, desired_nodegroups: Iterable[Mapping[str, Any]],
                    ownership: Mapping[str, str]) -> list[Finding]:
    """The cluster's Kubernetes version and state, and each node group against
    ``build_eks_cluster_inputs(spec)["nodegroup_requests"]``; node groups carrying ``ownership`` tags
    that the spec no longer lists are findings too (they keep running, and costing)."""
    component = f"EKS cluster {live.name}"
    if live.version is None:
        return [Finding(DRIFT, component, "missing", "describe_cluster finds no such cluster", BOOTSTRAP)]
    findings = []
    if live.version != desired_version:
        findings.append(Finding(
            DRIFT, component, f"runs Kubernetes {live.version}, the spec says {desired_version}", "describe_cluster",
            "the bootstrap never changes a cluster's version: upgrade it deliberately (aws eks update-cluster-version "
            f"--name {live.name} --kubernetes-version {desired_version}) or set cluster.kubernetes_version",
        ))
    if live.status != "ACTIVE":
        findings.append(Finding(DRIFT, component, f"is {live.status}, not ACTIVE", "describe_cluster",
                                "wait for the update in progress, or see the cluster's health in the EKS console"))
    groups = {group.name: group for group in live.nodegroups}
    wanted = {request["nodegroupName"]: request for request in desired_nodegroups}
    for name, request in wanted.items():
        findings.extend(_nodegroup_findings(live.name, name, groups.get(name), request))
    for name in sorted(set(groups) - set(wanted)):
        if all(groups[name].tags.get(key) == value for key, value in ownership.items()):
            findings.append(Finding(
                DRIFT, f"EKS node group {live.name}/{name}", "is ours but no longer in the spec",
                "tagged with this environment's ownership tags",
                f"delete it (aws eks delete-nodegroup --cluster-name {live.name} --nodegroup-name {name}) "
                "or put it back in cluster.node_groups",
            ))
    return findings


def _nodegroup_findings(cluster: str, name: str, live: NodegroupState | None,
                        request: Mapping[str, Any]) -> list[Finding]:
    component = f"EKS node group {cluster}/{name}"
    if live is None:
        return [Finding(DRIFT, component, "missing", "describe_nodegroup finds no such node group",
                        f"{BOOTSTRAP} (it creates missing node groups)")]
    scaling = request["scalingConfig"]
    # desiredSize is left out: the cluster autoscaler moves it between minSize and maxSize.
    have = {"scalingConfig.minSize": live.scaling.get("minSize"), "scalingConfig.maxSize": live.scaling.get("maxSize"),
            "instanceTypes": list(live.instance_types), "amiType": live.ami_type, "diskSize": live.disk_size,
            **{f"labels.{key}": live.labels.get(key) for key in request["labels"]}}
    want = {"scalingConfig.minSize": scaling["minSize"], "scalingConfig.maxSize": scaling["maxSize"],
            "instanceTypes": list(request["instanceTypes"]), "amiType": request["amiType"],
            "diskSize": request["diskSize"], **{f"labels.{key}": value for key, value in request["labels"].items()}}
    findings = []
    for path, value in want.items():
        if have[path] == value:
            continue
        if path.startswith("scalingConfig."):
            fix = (f"aws eks update-nodegroup-config --cluster-name {cluster} --nodegroup-name {name} --scaling-config "
                   f"minSize={scaling['minSize']},maxSize={scaling['maxSize']},desiredSize={scaling['desiredSize']}, "
                   "or change the spec's node group (the bootstrap does not resize an existing one)")
        elif path.startswith("labels."):
            fix = (f"aws eks update-nodegroup-config --cluster-name {cluster} --nodegroup-name {name} "
                   f"--labels addOrUpdateLabels={{{path.removeprefix('labels.')}={value}}}")
        else:
            fix = ("EKS cannot change it in place: add a node group with the spec's settings and delete this one, "
                   "or put the live value in the spec")
        findings.append(Finding(DRIFT, component, f"{path} differs from the spec",
                                f"{_short(have[path])} -> spec {_short(value)}", fix))
    if live.status != "ACTIVE":
        findings.append(Finding(DRIFT, component, f"is {live.status}, not ACTIVE", "describe_nodegroup health",
                                "see the node group's health issues in the EKS console (aws eks describe-nodegroup)"))
    return findings


def compare_oidc_provider(live: OidcProviderState, client_ids: Iterable[str], thumbprints: Iterable[str]) -> list[Finding]:
    """The cluster issuer's IAM OIDC provider: present, with the audience IRSA tokens carry."""
    if live.issuer is None:
        return []  # the cluster area reports the cluster missing
    component = f"IAM OIDC provider {live.issuer.removeprefix('https://')}"
    if not live.exists:
        return [Finding(DRIFT, component, "missing", "no IAM OIDC provider has the cluster's issuer URL",
                        f"{BOOTSTRAP}; until then no agent can assume its IRSA role (sts:AssumeRoleWithWebIdentity fails)")]
    findings = []
    if missing := sorted(set(client_ids) - set(live.client_ids)):
        findings.append(Finding(DRIFT, component, f"does not accept the audience {', '.join(missing)}",
                                f"client ids: {', '.join(live.client_ids) or 'none'}",
                                f"{BOOTSTRAP} (it adds the audience back); IRSA tokens carry this audience"))
    if set(thumbprints) != set(live.thumbprints):
        findings.append(Finding(DRIFT, component, "has other thumbprints than the bootstrap sets",
                                f"{', '.join(live.thumbprints) or 'none'} -> spec {', '.join(thumbprints)}",
                                f"{BOOTSTRAP} (it puts the thumbprint back)"))
    return findings


def compare_namespace(live: NamespaceState, desired_labels: Mapping[str, str]) -> list[Finding]:
    """The agents' namespace and the labels the bootstrap gives it (labels added by others are kept)."""
    component = f"Namespace {live.name}"
    if not live.exists:
        return [Finding(DRIFT, component, "missing", "the Kubernetes API has no such namespace",
                        f"{BOOTSTRAP}; every agent object was in it")]
    return [
        Finding(DRIFT, component, f"label {key} differs from the spec", f"{_short(live.labels.get(key))} -> spec {_short(value)}",
                f"{BOOTSTRAP} to put it back" + ("; teardown finds our namespace by this label"
                                                  if key in (naming.OWNER_LABEL, naming.ENVIRONMENT_LABEL) else ""))
        for key, value in sorted(desired_labels.items()) if live.labels.get(key) != value
    ]


def compare_remote_execution(live: RemoteExecutionState, required_ranges: Iterable[str] | None,
                             task_logs: Mapping[str, str] | None) -> list[Finding]:
    """The Deployment's Remote Execution settings: enabled; ``required_ranges`` (None: the spec does not
    manage them) all allowed; the task log bucket and URL pattern as ``task_logs`` (None: not managed)."""
    component = f"Astro Deployment {live.deployment_id}"
    if not live.enabled:
        return [Finding(DRIFT, component, "does not have Remote Execution enabled", "remoteExecution.enabled is false",
                        "astro.deployment_id must name a Remote Execution Deployment; the agents cannot connect to this one")]
    findings = []
    if missing := sorted(set(required_ranges or ()) - set(live.allowed_ip_ranges)):
        findings.append(Finding(DRIFT, component, f"does not allow {', '.join(missing)}",
                                f"allowed IP ranges: {', '.join(sorted(live.allowed_ip_ranges)) or 'none'}",
                                f"{BOOTSTRAP} (it adds them back); the agents' calls from there get 403"))
    for key, have in (("taskLogBucket", live.task_log_bucket), ("taskLogUrlPattern", live.task_log_url_pattern)):
        if task_logs is not None and have != task_logs[key]:
            findings.append(Finding(DRIFT, component, f"remoteExecution.{key} differs from the spec",
                                    f"{_short(have)} -> spec {_short(task_logs[key])}",
                                    f"{BOOTSTRAP}; the Airflow UI shows the agents' task logs only with astro.show_task_logs' settings"))
    return findings


# -- helpers -----------------------------------------------------------------------------------


def _keyed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _keyed(item) for key, item in value.items()}
    if isinstance(value, list):
        names = [item.get("name") for item in value if isinstance(item, Mapping)]
        if value and len(names) == len(value) and None not in names and len(set(names)) == len(names):
            return {str(item["name"]): _keyed({k: v for k, v in item.items() if k != "name"}) for item in value}
        return [_keyed(item) for item in value]
    return value


def _secret_paths(tree: Any, path: str = "") -> frozenset[str]:
    found: set[str] = set()
    if isinstance(tree, Mapping):
        for key, item in tree.items():
            child = f"{path}.{key}" if path else str(key)
            if key in INLINE_SECRET_KEYS or _SECRET_ENV.search(str(key)):
                found.add(child)
                found.update(f"{child}.{leaf}" for leaf in _leaves(item))
            found |= _secret_paths(item, child)
    return frozenset(found)


def _leaves(tree: Any, path: str = "") -> list[str]:
    if not isinstance(tree, Mapping):
        return [path] if path else []
    return [leaf for key, item in tree.items() for leaf in _leaves(item, f"{path}.{key}" if path else str(key))]


def _statement_diff(live: Mapping[str, Any] | str | None, desired: Mapping[str, Any]) -> str:
    """What IAM has that the spec does not, and the reverse, statement by statement; empty if equal."""
    current = normalize_policy(dict(live) if isinstance(live, Mapping) else (live or "{}"))
    wanted = normalize_policy(dict(desired))
    if current == wanted:
        return ""
    have, want = _statements(current), _statements(wanted)
    missing = [_describe(s) for key, s in want.items() if key not in have]
    extra = [_describe(s) for key, s in have.items() if key not in want]
    parts = [f"missing from IAM: {'; '.join(missing)}" if missing else "",
             f"in IAM, not in the spec: {'; '.join(extra)}" if extra else ""]
    return " | ".join(part for part in parts if part) or "the documents differ outside their statements (Version?)"


def _statements(policy: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    statements = policy.get("Statement")
    items = statements if isinstance(statements, list) else [statements] if statements else []
    return {json.dumps(item, sort_keys=True): item for item in items}


def _describe(statement: Mapping[str, Any]) -> str:
    actions = statement.get("Action")
    text = f"{statement.get('Sid') or statement.get('Effect', '')} {json.dumps(actions)}"
    if "Resource" in statement:
        text += f" on {json.dumps(statement['Resource'])}"
    if "Condition" in statement:
        text += f" if {json.dumps(statement['Condition'], sort_keys=True)}"
    text = text.strip()
    return text if len(text) <= MAX_TEXT * 2 else text[: MAX_TEXT * 2 - 1] + "…"


def _short(value: Any, limit: int = MAX_TEXT) -> str:
    if value is None:
        return "(unset)"
    text = value if value == REDACTED else repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
