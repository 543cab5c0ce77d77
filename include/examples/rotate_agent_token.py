"""Example: rotate the agent token every month.

``EnsureAgentTokenOperator(rotate=True)`` creates a new Astro agent token, replaces the Kubernetes
Secret in one write, restarts the agent Deployments of the release and waits (deferred) for their
rollout, then revokes the old token: running agents always hold a valid one. The token value never
reaches XCom or the logs; the task returns the new token's id.
"""

from __future__ import annotations

import os
from pathlib import Path
from datetime import datetime

from airflow.sdk import DAG

from remote_agents.environments import cluster_kwargs
from remote_agents.operators.astro import EnsureAgentTokenOperator
from remote_agents.spec import load_spec

# The environment this example acts on; a copy in your dags/ folder would name its spec file directly.
ENVIRONMENT = os.environ.get("REMOTE_AGENTS_EXAMPLE_ENVIRONMENT", "sandbox")
SPEC_FILE = Path(__file__).resolve().parents[1] / "environments" / f"{ENVIRONMENT}.yaml"
spec = load_spec(SPEC_FILE)

with DAG(
    dag_id=f"example_rotate_agent_token__{spec.name}",
    schedule="@monthly",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["remote-agents", "example", spec.name],
    doc_md=__doc__,
):
    EnsureAgentTokenOperator(
        task_id="rotate_agent_token",
        rotate=True,
        deployment_id=spec.astro.deployment_id,
        organization_id=spec.astro.organization_id,
        astro_conn_id=spec.astro.connection_id,
        namespace=spec.namespace,
        secret_name=spec.astro.agent_token_secret_name,
        environment=spec.name,
        token_name=f"remote-agents-{spec.name}",
        token_expiry_days=spec.astro.agent_token_expiry_days,
        restart_selector=f"release={spec.release_name}",
        **cluster_kwargs(spec),  # EKS: eks_cluster_name + aws_conn_id + region_name; else kubernetes_conn_id
    )
