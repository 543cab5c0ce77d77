"""The whole sandbox in one object: AWS (moto), Kubernetes (emulator), Astro (emulator), wired together.

``Sandbox`` starts every emulator on a free loopback port, seeds what a customer would already
have (the Astro organization and Remote Execution Deployment, the XCom and log buckets), points
every EKS cluster's endpoint at the Kubernetes emulator, and describes itself as environment
variables: Airflow Connections (``AIRFLOW_CONN_*``), ``KUBECONFIG`` and helm's home folders. The
same object backs ``python -m sandbox up`` (in a background process) and the pytest fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_agents import naming
from remote_agents.render.policies import (
    EKS_CLUSTER_MANAGED_POLICIES,
    EKS_NODE_MANAGED_POLICIES,
    build_permission_policy,
)
from remote_agents.spec import EnvironmentSpec
from sandbox.astro import AstroEmulator
from sandbox.aws import AdminCredentials, AwsEmulator
from sandbox.kube import KubeEmulator
from sandbox.kube.kinds import KINDS
from sandbox.moto_iam import service_account_token
from sandbox.standin import AgentStandIn
from sandbox.webhook import WebhookSink

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "include" / "environments" / "sandbox.yaml"
SELFTEST_DAG = ROOT / "dags" / "remote_agents_selftest.py"
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
TOOLS = ROOT / ".tools" / "bin"
# Stand-in processes that run as their own component; the others (scheduler and its task
# processes, api-server) run as a worker.
STANDIN_OWN_IDENTITY = (naming.DAG_PROCESSOR, naming.TRIGGERER)
_VALUES_KEYS = {naming.DAG_PROCESSOR: "dagProcessor", naming.TRIGGERER: "triggerer"}


@dataclass(frozen=True)
class AgentIdentity:
    component: str
    service_account: str
    role_arn: str


@dataclass(frozen=True)
class SandboxSettings:
    """Simulated latencies; zero-ish by default so tests stay fast, raised by benchmarks."""

    ready_delay: float = 0.5
    eks_cluster_delay: float = 0.0
    eks_nodegroup_delay: float = 0.0


def conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


class Sandbox:
    """All emulators for one environment spec; ``start()``, use ``env()``, ``stop()``.

    ``beside(spec)`` adds another environment to a running sandbox: the same AWS account, Astro
    API and webhook; the same cluster for an EKS spec (every EKS endpoint is the one emulator), its
    own cluster for an existing (on-prem) one; its own agents.
    """

    def __init__(self, state_dir: Path, spec: EnvironmentSpec, settings: SandboxSettings = SandboxSettings(),
                 *, primary: Sandbox | None = None) -> None:
        self.state_dir = state_dir
        self.spec = spec
        self.settings = settings
        self.primary = primary
        self.siblings: list[Sandbox] = []
        self.agents: AgentStandIn | None = None
        self.kube = (primary.kube if primary is not None and spec.eks else
                     KubeEmulator(kubernetes_version=spec.eks.kubernetes_version if spec.eks else "1.33",
                                  ready_delay=settings.ready_delay))
        if primary is not None:
            self.astro_api_token, self.aws, self.astro, self.webhook = (
                primary.astro_api_token, primary.aws, primary.astro, primary.webhook)
            return
        self.astro_api_token = secrets.token_urlsafe(32)
        self.aws = AwsEmulator(
            region=spec.backends.aws_region,
            eks_cluster_delay=settings.eks_cluster_delay,
            eks_nodegroup_delay=settings.eks_nodegroup_delay,
        )
        self.astro = AstroEmulator(
            api_token=self.astro_api_token, organization_id=spec.astro.organization_id,
            deployments=[_astro_deployment(spec)],
        )
        self.webhook = WebhookSink()

    def beside(self, spec: EnvironmentSpec, state_dir: Path) -> Sandbox:
        """Another environment in this running sandbox (see the class docstring); ``stop()`` removes it."""
        if self.primary is not None:
            return self.primary.beside(spec, state_dir)
        if any(other.spec.name == spec.name for other in (self, *self.siblings)):
            raise ValueError(f"environment {spec.name!r} is already in this sandbox")
        sibling = Sandbox(state_dir, spec, self.settings, primary=self)
        state_dir.mkdir(parents=True, exist_ok=True)
        if sibling.kube is not self.kube:
            sibling.kube.start()
        sibling.kube.write_kubeconfig(sibling.kubeconfig)
        self.astro.add_deployment(_astro_deployment(spec))
        self.siblings.append(sibling)
        sibling.seed_customer_resources()
        return sibling

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def start(self) -> Sandbox:
        # moto and the Astro emulator serve through werkzeug, which logs every request at INFO.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.aws.start()
        self.kube.start()
        self.astro.start()
        self.webhook.start()
        self.aws.set_eks_endpoint(self.kube.url)
        self.kube.write_kubeconfig(self.kubeconfig)
        self.seed_customer_resources()
        return self

    def stop(self) -> None:
        self.stop_agents()
        if self.primary is not None:
            if self.kube is not self.primary.kube:
                self.kube.stop()
            self.astro.remove_deployment(self.spec.astro.deployment_id)
            self.primary.siblings.remove(self)
            return
        for sibling in list(self.siblings):
            sibling.stop()
        self.webhook.stop()
        for emulator in (self.astro, self.kube, self.aws):
            emulator.stop()

    # -- the agents (a stand-in Airflow configured from the installed release) -------------------

    def installed_values(self) -> dict[str, Any]:
        """The agent release's values as installed (`helm get values --all`), read from the cluster."""
        from remote_agents.hooks.cluster import ClusterAccess
        from remote_agents.hooks.helm import HelmHook

        access = ClusterAccess(kubernetes_conn_id="kubernetes_default")
        with _environment(self.env()):
            values = HelmHook(access).get_values(self.spec.release_name, self.spec.namespace, all=True)
        if not values:
            raise RuntimeError(
                f"release {self.spec.namespace}/{self.spec.release_name} is not installed; run the bootstrap Dag first"
            )
        return values

    def agent_identity(self, component: str) -> AgentIdentity:
        """The ServiceAccount a component's Pods run as (from its installed Deployment) and its IRSA role.

        On EKS the Pod Identity webhook reads the role from the ServiceAccount's annotation and the
        kubelet projects a token whose ``sub`` is that ServiceAccount; the sandbox does the same.
        """
        namespace = self.spec.namespace
        deployments = self.kube.list_objects("Deployment", namespace, label_selector=f"app=astro-agent,component={component}")
        if not deployments:
            raise RuntimeError(f"no {component} Deployment in {namespace}; run the bootstrap Dag first")
        name = sorted(deployments, key=lambda d: d["metadata"]["name"])[0]["spec"]["template"]["spec"]["serviceAccountName"]
        account = self.kube.get_object("ServiceAccount", name, namespace)
        annotations = ((account or {}).get("metadata") or {}).get("annotations") or {}
        if ROLE_ARN_ANNOTATION not in annotations:
            raise RuntimeError(f"ServiceAccount {namespace}/{name} has no {ROLE_ARN_ANNOTATION} annotation")
        return AgentIdentity(component, name, str(annotations[ROLE_ARN_ANNOTATION]))

    def agents_role_arn(self) -> str:
        """The IRSA role of the workers' ServiceAccount."""
        return self.agent_identity(naming.WORKER).role_arn

    def agents_aws_env(self, component: str = naming.WORKER, values: dict[str, Any] | None = None) -> dict[str, str]:
        """The AWS environment of a component's Pods: IRSA's, with a token for its ServiceAccount, or
        on-prem the keys its env in ``values`` (default: the installed ones) reads from the credentials Secret."""
        if self.spec.irsa is None:
            env = self._secret_key_env(component, values or self.installed_values())
            return {**env, **self.aws.endpoint_env(self.spec.backends.aws_region)}
        identity = self.agent_identity(component)
        token_file = self.state_dir / f"web-identity-token-{component}"
        token_file.write_text(service_account_token(self.oidc_issuer(), self.spec.namespace, identity.service_account))
        return self.aws.irsa_env(identity.role_arn, str(token_file), session_name=f"sandbox-{component}")

    def _secret_key_env(self, component: str, values: dict[str, Any]) -> dict[str, str]:
        """What the kubelet puts into a component's container from the ``secretKeyRef`` items of its
        env in ``values``; a missing Secret or key fails as the container would."""
        items = (values["workers"][0] if component == naming.WORKER else values[_VALUES_KEYS[component]]).get("env") or []
        env = {}
        for item in items:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if not ref:
                continue
            secret = self.kube.get_object("Secret", ref["name"], self.spec.namespace)
            data = (secret or {}).get("data") or {}
            if ref["key"] not in data:
                raise RuntimeError(f"{component}: CreateContainerConfigError: Secret {self.spec.namespace}/{ref['name']} "
                                   f"has no key {ref['key']!r}")
            env[str(item["name"])] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def oidc_issuer(self) -> str:
        """The issuer of the cluster's ServiceAccount tokens, as EKS reports it."""
        if self.spec.eks is None:
            raise RuntimeError("IRSA in the sandbox needs an EKS cluster spec")
        cluster = self.aws.admin_client("eks").describe_cluster(name=self.spec.eks.name)["cluster"]
        return str(cluster["identity"]["oidc"]["issuer"])

    def start_agents(self, values: dict[str, Any] | None = None, parallelism: int = 4) -> AgentStandIn:
        """Start the stand-in for the installed release, with only the self-test Dag in its bundle."""
        if self.agents is not None:
            raise RuntimeError("the agents are already running; stop_agents() or restart them")
        dags = self.state_dir / "agent-dags"
        dags.mkdir(parents=True, exist_ok=True)
        shutil.copy(SELFTEST_DAG, dags)
        values = values or self.installed_values()
        agents = AgentStandIn(
            self.state_dir / "agents", dags, values, self.agents_aws_env(values=values), parallelism=parallelism,
            component_aws_env={component: self.agents_aws_env(component, values) for component in STANDIN_OWN_IDENTITY},
        )
        self.agents = agents.start()
        return agents

    def stop_agents(self) -> None:
        if self.agents is not None:
            self.agents.stop()
            self.agents = None

    def deployment_connection(self) -> dict[str, Any]:
        """The Remote Execution Deployment's REST API (the stand-in): host = its URL, password = a token."""
        if self.agents is None:
            raise RuntimeError("the agents are not running; call start_agents() first")
        return {"conn_type": "http", "host": self.agents.url, "password": self.agents.api_token()}

    def seed_customer_resources(self) -> None:
        """What exists before a bootstrap: the buckets the spec names and, on-prem, the IAM user whose
        keys the agents get (the customer brings them), and the AWS managed policies the EKS roles
        attach (AWS has them)."""
        self.aws.seed_aws_managed_policies(EKS_CLUSTER_MANAGED_POLICIES + EKS_NODE_MANAGED_POLICIES)
        backends = self.spec.backends
        s3 = self.aws.admin_client("s3", region_name=backends.aws_region)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        location = {} if backends.aws_region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": backends.aws_region}}
        for bucket in sorted({backends.xcom.bucket, backends.logs.bucket} - existing):
            s3.create_bucket(Bucket=bucket, **location)
        if self.spec.irsa is None:
            self.static_credentials()
        self.aws.request_log.clear()  # seeding is set-up, not something a test should count

    def static_credentials(self) -> AdminCredentials:
        """On-prem: the keys of the IAM user the customer made for the agents, allowed what our
        permission policy allows (the same document the IRSA role would get)."""
        policy = build_permission_policy(self.spec, self.aws.account_id)
        return self.aws.customer_user(f"{self.spec.name}-agents", policy)

    def reset(self) -> None:
        """Back to the state right after ``start()``: empty clusters, fresh moto, seeded Astro, for
        this sandbox and every environment beside it."""
        if self.primary is not None:
            self.primary.reset()
            return
        self.aws.reset()
        self.aws.set_eks_endpoint(self.kube.url)
        self.astro.reset()
        for sandbox in (self, *self.siblings):
            if sandbox is self or sandbox.kube is not self.kube:
                sandbox.kube.reset()
            sandbox.seed_customer_resources()

    def connections(self) -> dict[str, dict[str, Any]]:
        """Airflow Connections by id, as the spec names them."""
        spec = self.spec
        conns: dict[str, dict[str, Any]] = {
            spec.aws_conn_id: self.aws.aws_connection(),
            spec.astro.connection_id: {
                "conn_type": "astro",
                "host": self.astro.url,
                "password": self.astro_api_token,
                "extra": {"organization_id": spec.astro.organization_id},
            },
            "kubernetes_default": {"conn_type": "kubernetes", "extra": {"kube_config_path": str(self.kubeconfig)}},
        }
        notifier = spec.health.notifier
        if notifier.kind == "webhook" and notifier.connection_id:
            conns[notifier.connection_id] = {"conn_type": "http", "host": self.webhook.url}
        if self.agents is not None:
            conns[spec.astro.deployment_connection_id] = self.deployment_connection()
        if spec.cluster.kind == "existing":
            conns[spec.cluster.kubernetes_conn_id] = conns["kubernetes_default"]
        if spec.irsa is None:
            conns[spec.identity.aws_conn_id] = self.aws.key_connection(self.static_credentials())
        return conns

    def env(self) -> dict[str, str]:
        """Environment for anything that should use this sandbox (Airflow, helm, kubectl, boto3)."""
        helm_home = self.state_dir / "helm"
        env = {conn_env_name(conn_id): json.dumps(conn) for conn_id, conn in self.connections().items()}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            HELM_CACHE_HOME=str(helm_home / "cache"),
            HELM_CONFIG_HOME=str(helm_home / "config"),
            HELM_DATA_HOME=str(helm_home / "data"),
            SANDBOX_AWS_URL=self.aws.endpoint_url,
            SANDBOX_KUBE_URL=self.kube.url,
            SANDBOX_ASTRO_URL=self.astro.url,
            SANDBOX_STATE_DIR=str(self.state_dir),
        )
        return env

    def write_env_file(self, path: Path) -> None:
        """A shell file to ``source``: holds only the sandbox's own throw-away credentials."""
        lines = [f"export {name}={_shell_quote(value)}" for name, value in sorted(self.env().items())]
        lines.append(f'export PATH="{TOOLS}:$PATH"')
        _write_private(path, "\n".join(lines) + "\n")

    def mutating_calls(self) -> dict[str, list[Any]]:
        """The writes each emulator saw since ``forget_calls`` (Kubernetes dry runs are not writes)."""
        return {
            "aws": self.aws.request_log.mutating_calls,
            "kubernetes": [m for m in self.kube.mutations if not m.dry_run],
            "astro": self.astro.mutating_calls,
        }

    def forget_calls(self) -> None:
        self.aws.request_log.clear()
        self.kube.reset_counters()
        self.astro.clear_calls()

    def owned_leftovers(self) -> dict[str, list[str]]:
        """Everything that carries this environment's ownership tags (AWS) or label (Kubernetes), and
        its live Astro tokens: what a complete teardown leaves empty."""
        spec = self.spec
        (tag, value), = ((k, v) for k, v in naming.ownership_tags(spec).items() if k.endswith(":environment"))
        ours = {"Key": tag, "Value": value}
        iam = self.aws.admin_client("iam")
        regions = sorted({spec.backends.aws_region, *([spec.eks.region] if spec.eks else [])})
        aws = [f"iam role {r['RoleName']}" for r in iam.list_roles()["Roles"]
               if ours in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]]
        aws += [f"iam oidc provider {p['Arn']}" for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
                if ours in iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=p["Arn"])["Tags"]]
        for region in regions:
            eks = self.aws.admin_client("eks", region_name=region)
            aws += [f"eks cluster {name}" for name in eks.list_clusters()["clusters"]
                    if eks.describe_cluster(name=name)["cluster"].get("tags", {}).get(tag) == value]
            ec2 = self.aws.admin_client("ec2", region_name=region)
            # Each kind asked for itself, and its tags read from each item: moto's DescribeTags still
            # lists the tags of deleted resources, and its DescribeNatGateways ignores tag filters.
            for call, key, id_key in _EC2_KINDS:
                aws += [f"ec2 {key} {item[id_key]}" for item in getattr(ec2, call)()[key]
                        if ours in item.get("Tags", []) and item.get("State") not in ("deleted", "deleting")]
            secrets_manager = self.aws.admin_client("secretsmanager", region_name=region)
            aws += [f"secret {s['Name']}" for s in secrets_manager.list_secrets(
                Filters=[{"Key": "tag-key", "Values": [tag]}, {"Key": "tag-value", "Values": [value]}])["SecretList"]]
        selector = f"{naming.ENVIRONMENT_LABEL}={spec.name}"
        kubernetes = [f"{kind.kind} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}".replace(" /", " ")
                      for kind in KINDS for o in self.kube.list_objects(kind.plural, api_version=kind.api_version,
                                                                        label_selector=selector)]
        deployment = spec.astro.deployment_id
        astro = [f"{t.kind} token {t.id}" for t in (*self.astro.live_agent_tokens(deployment),
                                                    *self.astro.live_api_tokens(deployment))]
        return {"aws": aws, "kubernetes": kubernetes, "astro": astro}

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": time.time(),
            "spec": self.spec.name,
            "aws": self.aws.endpoint_url,
            "kubernetes": self.kube.url,
            "astro": self.astro.url,
            "kubeconfig": str(self.kubeconfig),
        }


# (describe call, its list key, the id key) of each EC2 resource kind the bootstrap creates
_EC2_KINDS = (
    ("describe_vpcs", "Vpcs", "VpcId"),
    ("describe_subnets", "Subnets", "SubnetId"),
    ("describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
    ("describe_nat_gateways", "NatGateways", "NatGatewayId"),
    ("describe_route_tables", "RouteTables", "RouteTableId"),
    ("describe_addresses", "Addresses", "AllocationId"),
    ("describe_security_groups", "SecurityGroups", "GroupId"),
)


def _astro_deployment(spec: EnvironmentSpec) -> dict[str, Any]:
    return {
        "id": spec.astro.deployment_id,
        "organization_id": spec.astro.organization_id,
        "name": f"{spec.name} remote execution",
        "remote_api_url": spec.astro.deployment_api_url,
        "remote_execution_enabled": True,
    }


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """The sandbox's Connections for the duration of a read by provider hooks (which read os.environ)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    temporary.replace(path)
