"""Health-check figures: end-to-end time of one health run, and detection latency of an injected fault.

Set-up (not measured): a bootstrapped sandbox (the bootstrap Dag with short simulated waits) and the
agents' stand-in started from the installed release (``Sandbox.start_agents()``), as
``scripts/demo.py`` does. Each health run is ``dag.test()`` of ``remote_agents_health__sandbox`` in
this process (tasks one after another, the self-test's trigger inline), as
tests/integration/test_health_checks.py runs it.

Detection latency: the spec's schedule (``*/30 * * * *``) compressed to one tick every
``interval`` seconds. The fault (the XCom statement removed from the agents' IAM role with
``put_role_policy`` as moto admin) is injected at T, at phase ``(i + 0.5) / n`` of an interval for
measurement i of n, so the waits for the next tick spread evenly over the interval (their median is
half an interval, the expectation for a fault at a random time). From the next tick on, health runs
follow the schedule (a run starts at its tick, or at once if a tick passed while the previous run
was still going, as with ``max_active_runs=1``) until a run's ``report`` says unhealthy and the
webhook sink holds the incident message; latency = the sink's receipt time - T. Then the policy is
restored and one more run records the recovery (and closes the incident, so the next measurement
starts from a healthy state). End-to-end samples: the first healthy run (before any fault; the
first ``dag.test()`` in the process, so it also pays first imports) and the recovery runs, which are
complete healthy runs that post one webhook message more.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

HEALTH_DAG = "remote_agents_health__sandbox"
BOOTSTRAP_DAG = "remote_agents_bootstrap__sandbox"
SPEC_SCHEDULE_SECONDS = 30 * 60  # "*/30 * * * *" in include/environments/sandbox.yaml
MAX_RUNS_PER_DETECTION = 4


def measure(sandbox: Any, dags: Any, runs: int, interval: float, say: Any = print, bootstrapped: bool = False) -> dict[str, Any]:
    """``bootstrapped``: the sandbox already holds a converged bootstrap (the bootstrap section's last
    run), so the set-up only starts the agents."""
    from airflow.dag_processing.dagbag import DagBag

    from benchmarks.bootstrap import Latencies, apply_latencies, run_dag
    from benchmarks.stats import summary
    from remote_agents.health import contract
    from sandbox.environment import conn_env_name

    bag = DagBag(str(dags))
    bootstrap, health = bag.get_dag(BOOTSTRAP_DAG), bag.get_dag(HEALTH_DAG)
    if bootstrap is None or health is None:
        raise RuntimeError(f"{BOOTSTRAP_DAG} or {HEALTH_DAG} not found in {dags}: {bag.import_errors}")
    started = time.monotonic()
    if not bootstrapped:
        sandbox.reset()
    apply_latencies(sandbox, Latencies(cluster=0.0, nodegroup=0.0, rollout=0.5, astro_call=0.0))
    if not bootstrapped:
        boot = run_dag(bootstrap)
        if boot["state"] != "success":
            raise RuntimeError(f"bootstrap for the health runs ended {boot['state']}; failed tasks: {boot['failed']}")
    agents = sandbox.start_agents()
    connection = conn_env_name(sandbox.spec.astro.deployment_connection_id)
    os.environ.update(sandbox.env())
    try:
        with agents.client() as client:
            client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)
        setup_seconds = time.monotonic() - started
        say(f"[bench]   health: bootstrapped sandbox and stand-in agents ready in {setup_seconds:.0f} s")
        receipts = _timestamp_webhook(sandbox.webhook)
        first = health_run(health)
        _expect(first, healthy=True)
        say(f"[bench]   health: first healthy run {first['wall']:.1f} s")
        detections, recoveries = [], []
        for i in range(runs):
            detection = detect(sandbox, health, receipts, interval, phase=(i + 0.5) / runs)
            detections.append(detection)
            recovery = health_run(health)  # policy restored: closes the incident
            _expect(recovery, healthy=True)
            if recovery["report"]["notified"] != "recovery":
                raise RuntimeError(f"the run after the restore did not notify a recovery: {recovery['report']}")
            recoveries.append(recovery)
            say(f"[bench]   health: fault {i + 1}/{runs} detected after {detection['latency']:.1f} s "
                f"(waited {detection['wait_for_tick']:.1f} s for the tick, {detection['runs']} run(s)); "
                f"recovery run {recovery['wall']:.1f} s")
    finally:
        os.environ.pop(connection, None)
        sandbox.stop_agents()
    compression = SPEC_SCHEDULE_SECONDS / interval
    return {
        "schedule": {"spec": "*/30 * * * *", "spec_seconds": SPEC_SCHEDULE_SECONDS, "interval": interval,
                     "compression": compression},
        "setup_seconds": setup_seconds,
        "healthy_runs": [_strip(r) for r in [first, *recoveries]],
        "detections": detections,
        "run_wall": summary([r["wall"] for r in [first, *recoveries]]),
        "failing_run_wall": summary([d["failing_run_wall"] for d in detections]),
        "detection_latency": summary([d["latency"] for d in detections]),
        "wait_for_tick": summary([d["wait_for_tick"] for d in detections]),
        "notify_after_tick": summary([d["latency"] - d["wait_for_tick"] for d in detections]),
        # the same latency on the real schedule: the wait scales with the schedule, the run does not
        "detection_latency_at_spec_schedule": summary(
            [d["wait_for_tick"] * compression + d["latency"] - d["wait_for_tick"] for d in detections]),
    }


def health_run(dag: Any) -> dict[str, Any]:
    """One health Dag run in this process; its wall time, state and the ``report`` task's return value."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    started = time.monotonic()
    run = dag.test()
    ended = time.monotonic()
    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id, task_id="report",
                                                 key="return_value").one_or_none()
    report = row.value if row is not None else None
    if isinstance(report, str):
        report = json.loads(report)
    return {"state": str(run.state), "wall": ended - started, "started": started, "ended": ended, "report": report}


def detect(sandbox: Any, dag: Any, receipts: list[tuple[float, dict[str, Any]]], interval: float,
           phase: float) -> dict[str, Any]:
    """Inject the XCom fault at T (phase ``phase`` of an interval), run on the compressed schedule until notified."""
    iam = sandbox.aws.admin_client("iam")
    role, policy_name, document = role_policy(sandbox)
    narrowed = {**document, "Statement": [s for s in document["Statement"]
                                          if "/xcom/" not in json.dumps(s.get("Resource"))]}
    if len(narrowed["Statement"]) == len(document["Statement"]):
        raise RuntimeError(f"no XCom statement in {role}/{policy_name}: {document}")
    sandbox.webhook.clear()
    receipts.clear()
    schedule_start = time.monotonic() - phase * interval  # the last tick before T
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(narrowed))
    injected = time.monotonic()
    try:
        tick = schedule_start + interval
        runs = []
        while len(runs) < MAX_RUNS_PER_DETECTION:
            time.sleep(max(0.0, tick - time.monotonic()))
            run = health_run(dag)
            runs.append(run)
            incident = [(at, m) for at, m in receipts if m.get("status") == "incident"]
            report = run["report"] or {}
            if report.get("healthy") is False and incident:
                notified_at, message = incident[0]
                return {
                    "latency": notified_at - injected, "wait_for_tick": runs[0]["started"] - injected,
                    "runs": len(runs), "failing_run_wall": run["wall"], "state": run["state"],
                    "failed_checks": report.get("failed_checks"), "notified": report.get("notified"),
                    "message_failed_checks": message.get("failed_checks"),
                }
            while tick <= run["started"]:  # the next tick after this run's; at once if it passed already
                tick += interval
        raise RuntimeError(f"fault not detected in {len(runs)} runs: {[r['report'] for r in runs]}")
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(document))


def role_policy(sandbox: Any) -> tuple[str, str, dict[str, Any]]:
    iam = sandbox.aws.admin_client("iam")
    role = sandbox.agents_role_arn().rsplit("/", 1)[1]
    policy_name = iam.list_role_policies(RoleName=role)["PolicyNames"][0]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    return role, policy_name, document if isinstance(document, dict) else json.loads(document)


def _timestamp_webhook(sink: Any) -> list[tuple[float, dict[str, Any]]]:
    """(monotonic receipt time, message) for every message the sink records from now on."""
    receipts: list[tuple[float, dict[str, Any]]] = []
    record = sink._record

    def timed(message: Any) -> None:
        receipts.append((time.monotonic(), message))
        record(message)

    sink._record = timed  # the sink's request handler calls sink._record
    return receipts


def _expect(run: dict[str, Any], healthy: bool) -> None:
    report = run["report"] or {}
    if report.get("healthy") is not healthy:
        raise RuntimeError(f"health run ended {run['state']} with report {report}; expected healthy={healthy}")


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    report = run["report"] or {}
    return {"state": run["state"], "wall": run["wall"], "healthy": report.get("healthy"), "notified": report.get("notified")}
