"""Drift of Remote Execution Agents from their spec: one Dag per environment spec in include/environments/.

Runs on the spec's `health.drift_schedule` (default daily) on the management Deployment. Each area
is its own task, so the grid shows what drifted: the EKS cluster (Kubernetes version, node groups),
its OIDC provider, the namespace's labels, the Helm release (chart version, values), the chart's
objects (what the release's manifest sets, against the live objects: edits by hand), the agents'
ServiceAccounts (IRSA role annotation), the IRSA roles (trust and permission policies), the Secrets
the chart references (present, token still live in Astro) and the Deployment's Remote Execution
settings (enabled, allowed IP ranges, task log bucket). A task fails with its
findings; nothing is repaired here (the bootstrap Dag converges). Parsing reads only the spec files.

Incident state: the Variable `remote_agents_drift__<env>__incident` holds the drifted resources of
the open incident (no secrets), so a drift is announced once and its end once, as in the health Dag.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, TriggerRule, Variable, chain, task

from remote_agents import naming
from remote_agents.environments import (
    START,
    EnvironmentFile,
    cluster_kwargs,
    environment_files,
    environments_folder,
    fail_run_when_a_task_failed,
    invalid_spec_dag,
)
from remote_agents.health import drift
from remote_agents.health.diagnose import FINDINGS_KEY
from remote_agents.spec import EnvironmentSpec

log = logging.getLogger(__name__)

def build_drift_dag(environment: EnvironmentFile) -> DAG:
    spec = environment.spec
    assert spec is not None
    access = cluster_kwargs(spec)
    areas = drift.areas_for(spec)
    with DAG(
        dag_id=f"remote_agents_drift__{spec.name}",
        description=f"Compare the live state of {spec.name} with its spec",
        dag_display_name=f"Drift {spec.name}",
        schedule=CronTriggerTimetable(spec.health.drift_schedule, timezone="UTC"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["remote-agents", "drift", spec.name],
        doc_md=f"Drift of environment `{spec.name}` ({environment.path.name}) from its spec: each `check_<area>` "
               "task fails with what differs (resource, evidence, fix); `report` notifies new drift and its end. "
               f"Repair with `remote_agents_bootstrap__{spec.name}`.",
    ) as dag:

        @task
        def read_identity() -> dict[str, str | None]:
            """The AWS account and the cluster's OIDC issuer, which the desired role ARNs and trust are built from."""
            from remote_agents.health.gather import drift_identity

            return drift_identity(spec)

        identity = read_identity()

        def check_task(area: str) -> Any:
            @task(task_id=f"check_{area}")
            def check(identity: dict[str, str | None], ti: Any = None) -> list[dict[str, str]]:
                """This area's live state compared with what the spec renders."""
                from remote_agents.health.checks import fail_on
                from remote_agents.health.gather import evaluate_drift
                from remote_agents.hooks.cluster import ClusterAccess

                return fail_on(evaluate_drift(area, spec, ClusterAccess(**access), identity), ti, log, f"check_{area}")

            return check(identity)

        checks = [check_task(area) for area in areas]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
            """One notification when drift appears or changes, one when it is gone."""
            return report_drift(spec, areas, ti, run_id)

        chain(checks, report())
        fail_run_when_a_task_failed(dag)
    return dag


def report_drift(spec: EnvironmentSpec, areas: list[str], ti: Any, run_id: str | None) -> dict[str, Any]:
    from remote_agents.notifiers import HealthNotifier, incident_transition

    findings: list[dict[str, str]] = []
    unknown = []
    for area in areas:
        pushed = ti.xcom_pull(task_ids=f"check_{area}", key=FINDINGS_KEY)
        if pushed is None:
            unknown.append(area)  # crashed before comparing (e.g. its system unreachable)
        findings.extend({**finding, "area": area} for finding in pushed or [])
    drifted_areas = sorted({f["area"] for f in findings} | set(unknown))
    # Keyed by resource, not area: a second resource drifting in the same area is news.
    drifted = sorted({f"{f['area']}: {f['component']}" for f in findings} | {f"{a}: (not checked)" for a in unknown})
    key = naming.incident_variable(spec.name, "drift")
    previous = Variable.get(key, default=None, deserialize_json=True)
    transition = incident_transition(previous, drifted)
    notifier = spec.health.notifier
    if transition and notifier.kind != "none" and notifier.connection_id:
        lines = [f"- {f['area']}: {f['message']}" for f in findings] + [
            f"- {area}: could not be checked; see the check_{area} task's log" for area in unknown
        ]
        text = (f"Remote agents `{spec.name}`: drift from the spec in {', '.join(drifted_areas)} ({run_id}); "
                f"repair with remote_agents_bootstrap__{spec.name}\n" + "\n".join(lines)
                if transition == "incident" else f"Remote agents `{spec.name}`: no drift from the spec any more ({run_id})")
        HealthNotifier(
            kind=notifier.kind, connection_id=notifier.connection_id, text=text,
            payload={"environment": spec.name, "kind": "drift", "status": transition, "run_id": run_id,
                     "drifted_areas": drifted_areas, "findings": findings},
        ).notify({})
    if drifted:
        if transition:
            Variable.set(key, json.dumps({"failed_checks": drifted, "run_id": run_id}))
    elif previous:
        Variable.delete(key)
    return {"drifted": bool(drifted), "drifted_areas": drifted_areas, "notified": transition, "findings": findings}


for _environment in environment_files(environments_folder(__file__)):
    _dag = (
        build_drift_dag(_environment) if _environment.spec
        else invalid_spec_dag(f"remote_agents_drift__{_environment.name}", _environment)
    )
    globals()[_dag.dag_id] = _dag
