"""Example: install a second Helm chart next to the agents, in their namespace, on their cluster.

``HelmUpgradeInstallOperator`` takes any chart: here the small local chart `charts/hello` (a
Deployment), but a repository chart works the same way (``chart="name"``, ``chart_repo_url=...``,
``chart_version=...``). A re-run with the same chart version and values changes nothing.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from remote_agents.environments import cluster_kwargs
from remote_agents.operators.helm import HelmUpgradeInstallOperator
from remote_agents.spec import load_spec

CHART = Path(__file__).resolve().parent / "charts" / "hello"

# The environment this example acts on; a copy in your dags/ folder would name its spec file directly.
ENVIRONMENT = os.environ.get("REMOTE_AGENTS_EXAMPLE_ENVIRONMENT", "sandbox")
SPEC_FILE = Path(__file__).resolve().parents[1] / "environments" / f"{ENVIRONMENT}.yaml"
spec = load_spec(SPEC_FILE)

with DAG(
    dag_id=f"example_second_chart__{spec.name}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["remote-agents", "example", spec.name],
    doc_md=__doc__,
):
    HelmUpgradeInstallOperator(
        task_id="install_hello",
        release_name="hello",
        namespace=spec.namespace,
        chart=str(CHART),
        chart_repo_url=None,
        values={"replicaCount": 1, "message": f"next to the agents of {spec.name}"},
        timeout=120,
        **cluster_kwargs(spec),
    )
