"""What the health Dag and the self-test Dag agree on: ids, names, the marker and the canary digest.

The self-test Dag (``dags/remote_agents_selftest.py``) runs on the agents, whose image need not
contain this provider, so it repeats these few values instead of importing them;
``tests/unit/test_health_diagnose.py`` keeps the two in step. No I/O, no Airflow imports.
"""

from __future__ import annotations

import hashlib
import re

from remote_agents.naming import canary_name as canary_name  # the Variable key and Connection id of the canary
from remote_agents.render.values import QUEUES_VARIABLE as QUEUES_VARIABLE  # the env var naming the queues

SELFTEST_DAG_ID = "remote_agents_selftest"
MARKER_PREFIX = "REMOTE-AGENTS-SELFTEST"
# One task group per queue, each with these tasks (the group id is ``queue_group(queue)``).
XCOM_PRODUCE = "xcom_produce"
XCOM_CONSUME = "xcom_consume"
READ_CANARY = "read_canary"
LOG_MARKER = "log_marker"
IDENTITY = "identity"
STATE_ROUNDTRIP = "state_roundtrip"
QUEUE_TASKS = (XCOM_PRODUCE, XCOM_CONSUME, READ_CANARY, LOG_MARKER, IDENTITY, STATE_ROUNDTRIP)
# The task state store key the self-test writes and reads back (its copy in the self-test Dag is checked).
STATE_KEY = "remote_agents_nonce"
# The deferrable task; it runs on the first queue and waits in the triggerer.
DEFERRED_WAIT = "deferred_wait"
DEFERRED_WAIT_SECONDS = 3


def queue_group(queue: str) -> str:
    """Task group id of a queue; '.' separates group and task in task ids, so it is replaced."""
    return "queue_" + re.sub(r"[^A-Za-z0-9_-]", "_", queue)


def queue_task_id(queue: str, task: str) -> str:
    return f"{queue_group(queue)}.{task}"


def marker(nonce: str, queue: str) -> str:
    """The log line the self-test prints; unique per run and queue."""
    return f"{MARKER_PREFIX} {nonce} queue={queue}"


def canary_digest(nonce: str, value: str) -> str:
    """What the agent returns for a canary it read: bound to this run's nonce, never the value itself."""
    return hashlib.sha256(f"{nonce}:{value}".encode()).hexdigest()


def parse_queues(text: str | None) -> list[str]:
    """``REMOTE_AGENTS_QUEUES`` ("default,heavy") as a list; ``default`` when unset."""
    queues = [q.strip() for q in (text or "").split(",") if q.strip()]
    return list(dict.fromkeys(queues)) or ["default"]
