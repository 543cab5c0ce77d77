"""The whole sandbox in one object: AWS (moto), Kubernetes (emulator), Astro (emulator), wired together.

``Sandbox`` starts every emulator on a free loopback port, seeds what a customer would already
have (the Astro organization and Remote Execution Deployment, the XCom and log buckets), points
every EKS cluster's endpoint at the Kubernetes emulator, and describes itself as environment
variables: Airflow Connections (``AIRFLOW_CONN_*``), ``KUBECONFIG`` and helm's home folders. The
same object backs ``python -m sandbox up`` (in a background process) and the pytest fixtures.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_agents.render.policies import EKS_CLUSTER_MANAGED_POLICIES, EKS_NODE_MANAGED_POLICIES
from remote_agents.spec import EnvironmentSpec
from sandbox.astro import AstroEmulator
from sandbox.aws import AwsEmulator
from sandbox.kube import KubeEmulator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "include" / "environments" / "sandbox.yaml"
TOOLS = ROOT / ".tools" / "bin"


@dataclass(frozen=True)
class SandboxSettings:
    """Simulated latencies; zero-ish by default so tests stay fast, raised by benchmarks."""

    ready_delay: float = 0.5
    eks_cluster_delay: float = 0.0
    eks_nodegroup_delay: float = 0.0


def conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


class Sandbox:
    """All emulators for one environment spec; ``start()``, use ``env()``, ``stop()``."""

    def __init__(self, state_dir: Path, spec: EnvironmentSpec, settings: SandboxSettings = SandboxSettings()) -> None:
        self.state_dir = state_dir
        self.spec = spec
        self.settings = settings
        self.astro_api_token = secrets.token_urlsafe(32)
        self.aws = AwsEmulator(
            region=spec.backends.aws_region,
            eks_cluster_delay=settings.eks_cluster_delay,
            eks_nodegroup_delay=settings.eks_nodegroup_delay,
        )
        self.kube = KubeEmulator(
            kubernetes_version=spec.eks.kubernetes_version if spec.eks else "1.33",
            ready_delay=settings.ready_delay,
        )
        self.astro = AstroEmulator(
            api_token=self.astro_api_token,
            organization_id=spec.astro.organization_id,
            deployments=[
                {
                    "id": spec.astro.deployment_id,
                    "name": f"{spec.name} remote execution",
                    "remote_api_url": spec.astro.deployment_api_url,
                    "remote_execution_enabled": True,
                }
            ],
        )

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def start(self) -> Sandbox:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.aws.start()
        self.kube.start()
        self.astro.start()
        self.aws.set_eks_endpoint(self.kube.url)
        self.kube.write_kubeconfig(self.kubeconfig)
        self.seed_customer_resources()
        return self

    def stop(self) -> None:
        for emulator in (self.astro, self.kube, self.aws):
            emulator.stop()

    def seed_customer_resources(self) -> None:
        """What exists before a bootstrap: the buckets the spec names (the customer brings them) and
        the AWS managed policies the EKS roles attach (AWS has them)."""
        self.aws.seed_aws_managed_policies(EKS_CLUSTER_MANAGED_POLICIES + EKS_NODE_MANAGED_POLICIES)
        s3 = self.aws.admin_client("s3")
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        backends = self.spec.backends
        for bucket in sorted({backends.xcom.bucket, backends.logs.bucket} - existing):
            s3.create_bucket(Bucket=bucket)
        self.aws.request_log.clear()  # seeding is set-up, not something a test should count

    def reset(self) -> None:
        """Back to the state right after ``start()``: empty cluster, fresh moto, seeded Astro."""
        self.aws.reset()
        self.aws.set_eks_endpoint(self.kube.url)
        self.kube.reset()
        self.astro.reset()
        self.seed_customer_resources()

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
        if spec.cluster.kind == "existing":
            conns[spec.cluster.kubernetes_conn_id] = conns["kubernetes_default"]
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


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    temporary.replace(path)
