"""Airflow cluster policy for benchmark runs only (this folder is $AIRFLOW_HOME/config there).

Simulated cloud waits are scaled down from minutes to seconds so a benchmark fits in minutes; the
operators' poll intervals are scaled down with them (by ``REMOTE_AGENTS_BENCH_POLL_INTERVAL``), so
polling adds the same share of a wait as it does against real EKS (30 s polls on a ~10 min create).
Nothing else about the tasks changes.
"""

from __future__ import annotations

import os
from typing import Any


def task_policy(task: Any) -> None:
    interval = os.environ.get("REMOTE_AGENTS_BENCH_POLL_INTERVAL")
    if interval and hasattr(task, "poll_interval"):
        task.poll_interval = float(interval)
