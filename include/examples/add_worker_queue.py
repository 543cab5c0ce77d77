"""Example: add a worker queue (`reports`) to running agents and upgrade the release.

The values are rendered from the spec plus one worker, so they match what the bootstrap renders.
With IRSA, the role must trust the new worker's ServiceAccount before its Pods start, so the roles
are converged first (their trust names every ServiceAccount exactly).

Make it permanent by adding the worker to the spec file too: the bootstrap renders values from the
spec, and would otherwise remove the queue on its next run.
"""

from __future__ import annotations

import os
from pathlib import Path
from datetime import datetime
from typing import Any

import yaml
from airflow.sdk import DAG, chain, task

from remote_agents import naming
from remote_agents.environments import cluster_kwargs
from remote_agents.operators.helm import HelmUpgradeInstallOperator
from remote_agents.operators.irsa import EnsureIrsaRoleOperator
from remote_agents.spec import EnvironmentSpec, load_spec, parse_spec

NEW_WORKER = {"name": "reports", "queue": "reports", "replicas": 1}

# The environment this example acts on; a copy in your dags/ folder would name its spec file directly.
ENVIRONMENT = os.environ.get("REMOTE_AGENTS_EXAMPLE_ENVIRONMENT", "sandbox")
SPEC_FILE = Path(__file__).resolve().parents[1] / "environments" / f"{ENVIRONMENT}.yaml"
spec = load_spec(SPEC_FILE)


def with_new_worker() -> EnvironmentSpec:
    data = yaml.safe_load(SPEC_FILE.read_text())
    data["workers"] = [*data["workers"], NEW_WORKER]
    return parse_spec(data, str(SPEC_FILE))


with DAG(
    dag_id=f"example_add_worker_queue__{spec.name}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["remote-agents", "example", spec.name],
    doc_md=__doc__,
):

    @task
    def aws_account() -> str | None:
        if not spec.irsa:
            return None
        from airflow.providers.amazon.aws.hooks.sts import StsHook

        return str(StsHook(aws_conn_id=spec.aws_conn_id).conn.get_caller_identity()["Account"])

    @task
    def render_values(account_id: str | None) -> dict[str, Any]:
        from remote_agents.hooks.astro import AstroHook
        from remote_agents.render.policies import build_role_arns
        from remote_agents.render.values import build_values

        extended = with_new_worker()
        reported = AstroHook(spec.astro.connection_id, spec.astro.organization_id).get_remote_api_url(
            spec.astro.deployment_id)
        return build_values(extended, build_role_arns(extended, account_id) if account_id else None,
                            deployment_api_url=reported)

    account = aws_account()
    values = render_values(account)
    upgrade = HelmUpgradeInstallOperator(
        task_id="helm_upgrade_install",
        release_name=spec.release_name,
        namespace=spec.namespace,
        chart=spec.chart.path or spec.chart.name,
        chart_repo_url=None if spec.chart.path else spec.chart.repo_url,
        chart_version=spec.chart.version,
        values=values,
        timeout=spec.chart.rollout_timeout_seconds,
        **cluster_kwargs(spec),
    )

    if spec.eks:

        @task
        def irsa_roles(account_id: str) -> list[dict[str, Any]]:
            """The roles' arguments for the extended spec: the new ServiceAccount joins the trust."""
            from remote_agents.hooks.aws import EksClusterHook
            from remote_agents.render.policies import build_irsa_policies

            issuer = EksClusterHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region).conn.describe_cluster(
                name=spec.eks.name)["cluster"]["identity"]["oidc"]["issuer"]
            return [
                {key: role[key] for key in ("role_name", "policy_name", "trust_policy", "permission_policy")}
                for role in build_irsa_policies(with_new_worker(), issuer, account_id).values()
            ]

        roles = EnsureIrsaRoleOperator.partial(
            task_id="ensure_irsa_role", tags=naming.ownership_tags(spec), aws_conn_id=spec.aws_conn_id,
            region_name=spec.eks.region,
        ).expand_kwargs(irsa_roles(account))
        chain(roles, upgrade)
