"""Bootstrap Dag runs against the sandbox: wall time, worker-slot time, mutating calls.

Run through ``dag.test(use_executor=True)`` with the api-server and triggerer of ``airflow_env``:
parallel branches run in parallel (LocalExecutor) and deferred waits sit in the triggerer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

SLOT_HOLDING_END = {"deferred", "success", "failed", "up_for_retry", "up_for_reschedule", "skipped"}


@dataclass(frozen=True)
class Latencies:
    """Simulated waits (seconds): EKS cluster and node group CREATING, rollout readiness, per Astro call."""

    cluster: float
    nodegroup: float
    rollout: float
    astro_call: float


def apply_latencies(sandbox: Any, latencies: Latencies) -> None:
    sandbox.aws.set_eks_delays(cluster_seconds=latencies.cluster, nodegroup_seconds=latencies.nodegroup)
    sandbox.kube.ready_delay = latencies.rollout
    sandbox.astro.add_latency(latencies.astro_call)


def clear_counters(sandbox: Any) -> None:
    sandbox.kube.reset_counters()
    sandbox.aws.request_log.clear()
    sandbox.astro.clear_calls()


def mutating_calls(sandbox: Any) -> dict[str, int]:
    kube = [m for m in sandbox.kube.mutations if not m.dry_run]
    return {
        "aws": len(sandbox.aws.request_log.mutating_calls),
        "kubernetes": len(kube),
        # helm writes through the Kubernetes API too (release Secrets, the chart's objects): counted apart.
        "helm": sum(1 for m in kube if "helm" in m.user_agent.lower()),
        "astro": len(sandbox.astro.mutating_calls),
    }


def slot_seconds(dag_id: str, run_id: str) -> tuple[float, float, dict[str, dict[str, float]], float | None]:
    """(seconds tasks held a worker slot, seconds tasks sat deferred, per task {"slot", "wall"}, the run's
    span from its first task's ``running`` to its last task's end) from the ``log`` table.

    A task holds a slot from each ``running`` event to the next deferred/success/failed event of the
    same try (a deferred task's try logs ``deferred`` when it frees its slot and ``running`` again when a
worker resumes it); its wall time runs from
    its first ``running`` to its last such event, deferral included.
    """
    from sqlalchemy import select

    from airflow.models.log import Log
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(Log.task_id, Log.map_index, Log.try_number, Log.event, Log.dttm)
            .where(Log.dag_id == dag_id, Log.run_id == run_id, Log.task_id.is_not(None))
            .order_by(Log.dttm)
        ).all()
    events: dict[tuple[str, int, int], list[tuple[str, Any]]] = defaultdict(list)
    for task_id, map_index, try_number, event, dttm in rows:
        events[(task_id, map_index if map_index is not None else -1, try_number or 0)].append((event, dttm))
    slot, deferred = 0.0, 0.0
    firsts, lasts = [], []
    per_task: dict[str, dict[str, float]] = defaultdict(lambda: {"slot": 0.0, "wall": 0.0})
    for (task_id, _, _), timeline in events.items():
        started: Any = None
        deferred_at: Any = None
        first: Any = None
        last: Any = None
        for event, dttm in timeline:
            if event == "running":
                if deferred_at is not None:
                    deferred += (dttm - deferred_at).total_seconds()
                    deferred_at = None
                started = dttm
                first = first or dttm
            elif event in SLOT_HOLDING_END and started is not None:
                held = (dttm - started).total_seconds()
                slot += held
                per_task[task_id]["slot"] += held
                started = None
                last = dttm
                if event == "deferred":
                    deferred_at = dttm
        if first is not None and last is not None:
            per_task[task_id]["wall"] += (last - first).total_seconds()
            firsts.append(first)
            lasts.append(last)
    span = (max(lasts) - min(firsts)).total_seconds() if firsts else None
    return slot, deferred, dict(per_task), span


def run_dag(dag: Any, use_executor: bool = True) -> dict[str, Any]:
    """One Dag run; its state, wall times and slot accounting.

    ``wall`` is the run itself: from its first task's start to its last task's end, as the audit log
    recorded them (a task instance's ``start_date`` can predate its start). ``call_wall`` is the whole ``dag.test()`` call, which adds the harness's own work
    (serializing the Dag, syncing the Dag folder to the database before the run, stopping the
    executor's worker processes after it) that a Deployment's scheduler does not repeat per run.
    """
    started = time.monotonic()
    run = dag.test(use_executor=use_executor)
    call_wall = time.monotonic() - started
    slot, deferred, per_task, span = slot_seconds(dag.dag_id, run.run_id)
    failed = sorted(ti.task_id for ti in run.get_task_instances() if ti.state not in ("success", "skipped"))
    wall = span if span is not None else call_wall
    return {"state": str(run.state), "wall": wall, "call_wall": call_wall, "slot": slot, "deferred": deferred,
            "per_task": per_task, "failed": failed}
