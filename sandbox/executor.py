"""The stand-in's executor: a LocalExecutor that runs only the queues some worker agent consumes.

One LocalExecutor would run every queue's tasks, so "a queue with no worker" could never be seen.
On Astro, a task on a queue no worker agent heartbeats stays queued until the scheduler's
`task_queued_timeout`; this executor gives the same picture: it accepts a task only when its queue
is in `SANDBOX_WORKER_QUEUES` (the values' `workers[].queues`, set by `AgentStandIn`) and leaves the
others queued. Chosen over per-queue stand-in schedulers (one Airflow per worker would cost a
process group and seconds of start-up each) and over a scheduler pool trick (which would show the
tasks as scheduled, not queued, unlike a real Deployment).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.executors import workloads
from airflow.executors.local_executor import LocalExecutor

QUEUES_VARIABLE = "SANDBOX_WORKER_QUEUES"


class QueueServingLocalExecutor(LocalExecutor):
    """Runs tasks of served queues; tasks of any other queue stay queued, as on Astro."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served_queues = frozenset(q for q in os.environ.get(QUEUES_VARIABLE, "").split(",") if q)

    def queue_workload(self, workload: Any, session: Any) -> None:
        if isinstance(workload, workloads.ExecuteTask) and workload.ti.queue not in self.served_queues:
            self.log.warning("No worker consumes queue %r; leaving %s queued", workload.ti.queue, workload.ti.key)
            return
        super().queue_workload(workload, session)
