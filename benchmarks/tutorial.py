"""The baseline: the tutorial's steps, one after another, as a person (or a script) follows them.

Same operators and inputs as the bootstrap Dag, in the tutorial's order (reference sections 2-4):
cluster and node group (waiting in the task), OIDC provider, namespace, agent token, registry
secret, ``helm install`` without the role and wait for the rollout, then the IRSA role and a
``helm upgrade`` that adds the role annotation, and ``kubectl rollout restart`` so the running Pods
get it (reference gotcha 6), waiting for that rollout too. It runs in this process
with no Airflow task overhead and no human think time, so it is the fastest the manual path can be.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from remote_agents import naming
from remote_agents.environments import cluster_kwargs
from remote_agents.hooks.astro import AstroHook
from remote_agents.operators.astro import EnsureAgentTokenOperator, EnsureRegistrySecretOperator
from remote_agents.operators.cluster import EnsureEksClusterOperator
from remote_agents.operators.helm import HelmUpgradeInstallOperator
from remote_agents.operators.irsa import EnsureIrsaRoleOperator, EnsureOidcProviderOperator
from remote_agents.operators.kubernetes import EnsureNamespaceOperator
from remote_agents.render.cluster import build_eks_cluster_inputs
from remote_agents.render.policies import build_irsa_policies, build_role_arns
from remote_agents.render.values import build_values
from remote_agents.spec import EnvironmentSpec

ROOT = Path(__file__).resolve().parents[1]


def run_tutorial(spec: EnvironmentSpec, account_id: str, poll_interval: float) -> float:
    """Wall seconds of the sequential path from nothing to agents running with their IAM role."""
    assert spec.eks is not None and spec.irsa, "the tutorial baseline needs an EKS + IRSA spec"
    access = cluster_kwargs(spec)
    common = {"namespace": spec.namespace, "environment": spec.name, **access}
    aws = {"aws_conn_id": spec.aws_conn_id, "region_name": spec.eks.region}
    tokens = {"deployment_id": spec.astro.deployment_id, "organization_id": spec.astro.organization_id,
              "astro_conn_id": spec.astro.connection_id, **common}
    helm = {"release_name": spec.release_name, "namespace": spec.namespace, "chart": spec.chart.path or spec.chart.name,
            "chart_repo_url": None if spec.chart.path else spec.chart.repo_url, "deferrable": False,
            "poll_interval": poll_interval, **access}

    # The tutorial copies the agent API URL from the Deployment's Remote Agents tab.
    api_url = AstroHook(spec.astro.connection_id, spec.astro.organization_id).get_remote_api_url(spec.astro.deployment_id)
    values = build_values(spec, role_arns=build_role_arns(spec, account_id), deployment_api_url=api_url)
    started = time.monotonic()
    run(EnsureEksClusterOperator(task_id="cluster", **build_eks_cluster_inputs(spec), deferrable=False,
                                 poll_interval=poll_interval, aws_conn_id=spec.aws_conn_id))
    oidc = run(EnsureOidcProviderOperator(task_id="oidc", eks_cluster_name=spec.eks.name,
                                          tags=naming.ownership_tags(spec), **aws))
    run(EnsureNamespaceOperator(task_id="namespace", labels=spec.labels, **common))
    run(EnsureAgentTokenOperator(task_id="agent_token", secret_name=spec.astro.agent_token_secret_name,
                                 token_name=f"remote-agents-{spec.name}", **tokens))
    run(EnsureRegistrySecretOperator(task_id="registry", secret_name=spec.astro.registry_secret_name,
                                     registry=spec.astro.registry, token_name=f"remote-agents-{spec.name}-registry", **tokens))
    run(HelmUpgradeInstallOperator(task_id="install", values=without_role_annotation(values), **helm))
    for role in build_irsa_policies(spec, oidc["oidc_issuer"], account_id).values():
        run(EnsureIrsaRoleOperator(task_id="irsa_role", role_name=role["role_name"], policy_name=role["policy_name"],
                                   trust_policy=role["trust_policy"], permission_policy=role["permission_policy"],
                                   tags=naming.ownership_tags(spec), **aws))
    run(HelmUpgradeInstallOperator(task_id="upgrade", values=values, **helm))
    restart_and_wait(spec.namespace)
    return time.monotonic() - started


def without_role_annotation(values: dict[str, Any]) -> dict[str, Any]:
    """The tutorial's first install: the ServiceAccount exists, the IAM role does not yet."""
    return {**values, "serviceAccount": {}}


def restart_and_wait(namespace: str) -> None:
    """Pods created before the role annotation need a restart to get the web-identity token (reference 4, gotcha 6)."""
    deployments = kubectl("get", "deployments", "-n", namespace, "-o", "name").split()
    kubectl("rollout", "restart", "-n", namespace, *deployments)
    for deployment in deployments:
        kubectl("rollout", "status", "-n", namespace, deployment, "--timeout=600s")


def kubectl(*args: str) -> str:
    return subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True).stdout


def run(operator: Any) -> dict[str, Any]:
    return operator.execute({})


def run_tutorial_process(account_id: str, poll_interval: float) -> subprocess.Popen[str]:
    """The tutorial in a child process, against the sandbox in this process's environment, so it can run
    beside a Dag run: a thread would not do, the LocalExecutor forks its workers while the thread holds
    locks (a cached_property's), and the forked worker deadlocks on them. ``wall_of`` collects it."""
    import os
    import sys

    return subprocess.Popen([sys.executable, "-m", "benchmarks.tutorial", account_id, str(poll_interval)],
                            env=dict(os.environ), cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wall_of(process: subprocess.Popen[str]) -> float:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"the tutorial baseline failed (exit {process.returncode}); its output is in the benchmark log")
    return float(out.strip().splitlines()[-1])


if __name__ == "__main__":
    import sys

    from remote_agents.spec import load_spec

    print(run_tutorial(load_spec(ROOT / "include" / "environments" / "sandbox.yaml"), sys.argv[1], float(sys.argv[2])))
