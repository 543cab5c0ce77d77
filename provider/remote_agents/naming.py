"""Names derived from a spec, in one place: the chart, the values, IAM trust policies and the
health checks must all agree on them (e.g. IRSA trusts exactly the ServiceAccounts the chart creates).

The agent chart names each component's Deployment `<prefix>-<component>`, with workers as
`<prefix>-worker-<name>`. ServiceAccount names are not left to the chart: its documented defaults
(`<prefix>-dag-processor-<name>`, `<prefix>-triggerer-<name>`, `<prefix>-worker-<name>`, in the
comments of the chart 2.x values.yaml) are ambiguous, so the values set every component's
`serviceAccount...name` to the names below, and the IRSA trust names exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # The spec checks the names made here (IAM role names), so it imports this module.
    from remote_agents.spec import EnvironmentSpec

DAG_PROCESSOR = "dag-processor"
TRIGGERER = "triggerer"
WORKER = "worker"
SENTINEL = "sentinel"
# Components that run Airflow code and so need S3 (XCom, logs) and Secrets Manager access.
AIRFLOW_COMPONENTS = (DAG_PROCESSOR, TRIGGERER, WORKER)
OWNER_LABEL = "app.kubernetes.io/managed-by"
OWNER_VALUE = "remote-agents"
ENVIRONMENT_LABEL = "remote-agents.astronomer.io/environment"


@dataclass(frozen=True)
class AgentWorkload:
    """One agent Deployment and the ServiceAccount its Pods run as."""

    component: str
    name: str
    queue: str | None = None

    @property
    def service_account(self) -> str:
        return self.name


def agent_workloads(spec: EnvironmentSpec, include_sentinel: bool = True) -> list[AgentWorkload]:
    """Every Deployment the chart creates for this spec, in a stable order."""
    prefix = spec.resource_name_prefix
    workloads = [
        AgentWorkload(DAG_PROCESSOR, f"{prefix}-{DAG_PROCESSOR}"),
        AgentWorkload(TRIGGERER, f"{prefix}-{TRIGGERER}"),
        *(AgentWorkload(WORKER, worker_service_account(spec, w.name), w.queue) for w in spec.workers),
    ]
    if include_sentinel and spec.chart.sentinel:
        workloads.append(AgentWorkload(SENTINEL, f"{prefix}-{SENTINEL}"))
    return workloads


def worker_service_account(spec: EnvironmentSpec, worker: str) -> str:
    return f"{spec.resource_name_prefix}-{WORKER}-{worker}"


def agent_restart_selector(spec: EnvironmentSpec) -> str:
    """The label selector of every agent Deployment: our environment label, which the values' ``labels``
    put on every object and Pod the chart makes (the chart's own labels are not documented)."""
    return f"{ENVIRONMENT_LABEL}={spec.name}"


def service_account_subjects(spec: EnvironmentSpec, component: str | None = None) -> list[str]:
    """`system:serviceaccount:<ns>:<sa>` for the Airflow components (optionally one component)."""
    return [
        service_account_subject(spec, w)
        for w in agent_workloads(spec, include_sentinel=False)
        if component is None or w.component == component
    ]


def service_account_subject(spec: EnvironmentSpec, workload: AgentWorkload) -> str:
    """The `sub` of the workload's ServiceAccount tokens, as an IRSA trust names it."""
    return f"system:serviceaccount:{spec.namespace}:{workload.service_account}"


def irsa_role_names(spec: EnvironmentSpec) -> dict[str | None, str]:
    """IAM role name per component (key None = one role for all components); the spec keeps them valid."""
    irsa = spec.irsa
    base = (irsa.role_name if irsa and irsa.role_name else f"{spec.name}-remote-agents")
    if irsa and irsa.per_component:
        return {component: f"{base}-{component}" for component in AIRFLOW_COMPONENTS}
    return {None: base}


def worker_role_name(spec: EnvironmentSpec) -> str:
    """The IRSA role the workers assume (their own with one role per component)."""
    roles = irsa_role_names(spec)
    return roles.get(WORKER) or roles[None]


def canary_name(environment: str) -> str:
    """The Variable key and Connection id of the canary the health Dag writes before each self-test.

    One per environment, so two environments that share an AWS account and secrets prefixes never
    overwrite each other's canary. Environment names are DNS labels, so swapping '-' for '_' (which
    Airflow's environment-variable names need) keeps them apart.
    """
    return f"remote_agents_canary__{environment.replace('-', '_')}"


def canary_secret_names(spec: EnvironmentSpec) -> dict[str, str]:
    """The canary's two secrets in Secrets Manager, under the agents' secrets backend prefixes."""
    secrets = spec.backends.secrets
    return {"variable": f"{secrets.variables_prefix}/{canary_name(spec.name)}",
            "connection": f"{secrets.connections_prefix}/{canary_name(spec.name)}"}


# The Dags that keep an open incident in an Airflow Variable (see incident_variable).
INCIDENT_DAGS = ("health", "drift")


def incident_variable(environment: str, dag: str) -> str:
    """The Variable holding the open incident of an environment's health or drift Dag (no secrets)."""
    return f"remote_agents_{dag}__{environment}__incident"


def ownership_labels(spec: EnvironmentSpec) -> dict[str, str]:
    """Labels on every Kubernetes object we create, so teardown deletes only what is ours."""
    return environment_ownership_labels(spec.name)


def environment_ownership_labels(environment: str) -> dict[str, str]:
    """``ownership_labels`` from the environment's name alone, for operators used without a spec."""
    return {OWNER_LABEL: OWNER_VALUE, ENVIRONMENT_LABEL: environment}


def ownership_tags(spec: EnvironmentSpec) -> dict[str, str]:
    """AWS tags on every resource we create, for the same reason."""
    return {"remote-agents:environment": spec.name, "remote-agents:managed-by": OWNER_VALUE}


# Objects we create beside the chart (manifests) and the chart values refer to by name.
CONSTRAINTS_CONFIG_KEY = "constraints.txt"
# One inline permission policy per IRSA role; the role name already says whose it is.
IRSA_POLICY_NAME = "remote-agents-access"


def constraints_configmap_name(spec: EnvironmentSpec) -> str:
    """The ConfigMap holding the agent image's pip freeze, used by the worker pip-install initContainer."""
    return f"{spec.resource_name_prefix}-pip-constraints"


def openlineage_secret_name(spec: EnvironmentSpec) -> str:
    """Secret (key `api-key`) the chart's `openLineage.apiKeySecret` names when lineage is enabled."""
    return f"{spec.resource_name_prefix}-openlineage-api-key"


def eks_role_names(spec: EnvironmentSpec) -> dict[str, str]:
    """IAM role names for the EKS control plane and node groups, used when the spec gives no ARNs."""
    return {"cluster": f"{spec.name}-eks-cluster", "node": f"{spec.name}-eks-node"}
