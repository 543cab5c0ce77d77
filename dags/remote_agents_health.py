"""Health checks of Remote Execution Agents: one Dag per environment spec in include/environments/.

Runs on the management Deployment, on the spec's `health.schedule` and after every applied bootstrap
(the environment's asset). Parsing reads only the spec files.

Incident state: an Airflow Variable `remote_agents_health__<env>__incident` holds the failed checks
of the open incident (no secrets). A Variable, not the previous run's XCom, because it survives
cleared or deleted runs and a run that failed before reporting, and an operator can read it (or
delete it to re-announce) in the UI.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, TriggerRule, Variable, chain, task

from remote_agents import naming
from remote_agents.environments import (
    START,
    EnvironmentFile,
    cluster_kwargs,
    environment_asset,
    environment_files,
    environments_folder,
    fail_run_when_a_task_failed,
    invalid_spec_dag,
)
from remote_agents.health import contract, diagnose
from remote_agents.operators.selftest import SelfTestRunOperator
from remote_agents.spec import EnvironmentSpec

log = logging.getLogger(__name__)

SELFTEST_CHECKS = (diagnose.DEPLOYMENT_API, diagnose.QUEUES, diagnose.XCOM, diagnose.SECRETS, diagnose.LOGS,
                   diagnose.IDENTITY, diagnose.STATE_STORE, diagnose.DEFERRAL)


def build_health_dag(environment: EnvironmentFile) -> DAG:
    spec = environment.spec
    assert spec is not None
    access = cluster_kwargs(spec)
    with DAG(
        dag_id=f"remote_agents_health__{spec.name}",
        description=f"Self-test the agents of {spec.name}: XCom, secrets, logging, identity, workloads",
        dag_display_name=f"Health {spec.name}",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.health.schedule, timezone="UTC"), assets=environment_asset(spec.name)
        ),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["remote-agents", "health", spec.name],
        doc_md=f"Health checks of environment `{spec.name}` ({environment.path.name}): each check task fails "
               "with the diagnosis (component, evidence, fix); `report` notifies incidents and recoveries.",
    ) as dag:

        @task
        def write_canary() -> dict[str, str]:
            """A fresh canary Variable and Connection in Secrets Manager; returns the nonce and the digest only."""
            from remote_agents.health.gather import write_canary as write

            return write(spec, spec.aws_conn_id)

        @task
        def check_workloads(ti: Any = None) -> list[dict[str, str]]:
            """Agent Pods ready per component, restarts, the release's revision deployed with the spec's chart."""
            from remote_agents.health.checks import evaluate_workloads, fail_on
            from remote_agents.hooks.cluster import ClusterAccess

            return fail_on(evaluate_workloads(spec, ClusterAccess(**access)), ti, log, "check_workloads")

        @task
        def check_agent_token(ti: Any = None) -> list[dict[str, str]]:
            """The agent and registry tokens in their Secrets are live in Astro, and not about to expire."""
            from remote_agents.health.checks import diagnose_tokens, fail_on, token_expiry
            from remote_agents.health.gather import gather_tokens
            from remote_agents.hooks.cluster import ClusterAccess

            tokens = gather_tokens(spec, ClusterAccess(**access))
            ti.xcom_push(key=diagnose.TOKENS_KEY, value=token_expiry(tokens))  # the days left, for `remote-agents status`
            return fail_on(diagnose_tokens(spec, tokens), ti, log, "check_agent_token")

        canary = write_canary()
        selftest = SelfTestRunOperator(
            task_id="run_selftest",
            deployment_conn_id=spec.astro.deployment_connection_id,
            nonce=canary["nonce"],
            canary=contract.canary_name(spec.name),
            queues=[worker.queue for worker in spec.workers],
            timeout_seconds=spec.health.selftest_timeout_seconds,
        )

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def gather_evidence(canary_result: dict[str, str] | None = None, ti: Any = None) -> dict[str, Any]:
            """The self-test's tasks, XComs and logs through the API, and the objects in the buckets."""
            from remote_agents.health.checks import collect_selftest

            run = ti.xcom_pull(task_ids="run_selftest")
            return collect_selftest(spec, run, canary_result, spec.aws_conn_id)

        evidence = gather_evidence(canary)
        chain(canary, selftest, evidence)

        def check_task(check: str) -> Any:
            @task(task_id=f"check_{check}")
            def run_check(collected: dict[str, Any], ti: Any = None) -> list[dict[str, str]]:
                from remote_agents.health.checks import evaluate_selftest, fail_on, verified

                findings = fail_on(evaluate_selftest(spec, collected)[check], ti, log, f"check_{check}")
                for line in verified(check, collected):
                    log.info("verified %s", line)
                return findings

            return run_check(evidence)

        checks = [check_workloads(), check_agent_token(), *(check_task(check) for check in SELFTEST_CHECKS)]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
            """One notification per incident and one on recovery; nothing on a healthy run after a healthy run."""
            return report_health(spec, ti, run_id)

        chain(checks, report())
        fail_run_when_a_task_failed(dag)
    return dag


def report_health(spec: EnvironmentSpec, ti: Any, run_id: str | None) -> dict[str, Any]:
    from remote_agents.notifiers import HealthNotifier, incident_transition

    task_ids = ["check_workloads", "check_agent_token", *(f"check_{check}" for check in SELFTEST_CHECKS)]
    findings: list[dict[str, str]] = []
    unknown = []
    for task_id in task_ids:
        pushed = ti.xcom_pull(task_ids=task_id, key=diagnose.FINDINGS_KEY)
        if pushed is None:
            unknown.append(task_id)  # crashed before diagnosing (e.g. its system unreachable)
        findings.extend(pushed or [])
    warnings = [f for f in findings if f.get("severity") == diagnose.WARNING]
    findings = [f for f in findings if f.get("severity") != diagnose.WARNING]
    failed_checks = sorted({f["check"] for f in findings} | {t.removeprefix("check_") for t in unknown})
    key = naming.incident_variable(spec.name, "health")
    previous = Variable.get(key, default=None, deserialize_json=True)
    transition = incident_transition(previous, failed_checks)
    notifier = spec.health.notifier
    if transition and notifier.kind != "none" and notifier.connection_id:
        lines = [f"- {f['message']}" for f in findings] + [f"- {t}: the check could not run; see its log" for t in unknown]
        text = (f"Remote agents `{spec.name}`: {len(failed_checks)} health check(s) failing ({run_id})\n" + "\n".join(lines)
                if transition == "incident" else f"Remote agents `{spec.name}`: healthy again ({run_id})")
        HealthNotifier(
            kind=notifier.kind, connection_id=notifier.connection_id, text=text,
            payload={"environment": spec.name, "status": transition, "run_id": run_id,
                     "failed_checks": failed_checks, "findings": findings},
        ).notify({})
    if failed_checks:
        if transition:
            Variable.set(key, json.dumps({"failed_checks": failed_checks, "run_id": run_id}))
    elif previous:
        Variable.delete(key)
    return {"healthy": not failed_checks, "failed_checks": failed_checks, "notified": transition, "findings": findings,
            "warnings": warnings}


for _environment in environment_files(environments_folder(__file__)):
    _dag = (
        build_health_dag(_environment) if _environment.spec
        else invalid_spec_dag(f"remote_agents_health__{_environment.name}", _environment)
    )
    globals()[_dag.dag_id] = _dag
