"""``DagRunStateTrigger``: wait, in the triggerer, until a Dag run on another Deployment finishes.

Polls the Deployment's REST API (``DeploymentHook``) for the run's state. The REST client is sync
(httpx) and each poll is one short GET, so it runs in ``asyncio.to_thread``; the hook, and with it
the Connection and its token, is rebuilt inside ``run()``, so only primitives are serialized.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_agents.hooks.deployment import TERMINAL_RUN_STATES, DeploymentApiError, DeploymentHook

# Transport errors and 5xx in a row before the wait gives up (a Deployment restarting is brief).
MAX_CONSECUTIVE_ERRORS = 5


class DagRunStateTrigger(BaseTrigger):
    """Polls ``dag_id``/``run_id`` until it is success/failed or ``deadline`` (epoch seconds) passes.

    Yields one event: ``{"status": "success", "state": "success"|"failed", ...}`` when the run finished,
    ``{"status": "timeout", "state": <still>, ...}`` at the deadline (tasks still queued are the
    evidence of a queue nobody consumes), or ``{"status": "error", "message": ...}`` when the API
    cannot be used. Every event carries ``run_id`` and ``waited_seconds`` since ``started_at``.
    """

    def __init__(
        self,
        deployment_conn_id: str,
        dag_id: str,
        run_id: str,
        deadline: float,
        started_at: float,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()
        self.deployment_conn_id = deployment_conn_id
        self.dag_id = dag_id
        self.run_id = run_id
        self.deadline = deadline
        self.started_at = started_at
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "deployment_conn_id": self.deployment_conn_id,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DeploymentHook(self.deployment_conn_id)
        errors = 0
        state = "unknown"
        while True:
            try:
                state = await asyncio.to_thread(
                    hook.call, f"reading {self.dag_id} run {self.run_id}", "run_state", self.dag_id, self.run_id
                )
                errors = 0
            except DeploymentApiError as error:
                errors += 1
                transient = error.status_code is None or error.status_code >= 500
                if not transient or errors >= MAX_CONSECUTIVE_ERRORS:
                    yield self._event("error", state, message=str(error))
                    return
                self.log.warning("Polling %s failed (%s); retrying", self.run_id, error)
            if state in TERMINAL_RUN_STATES:
                yield self._event("success", state)
                return
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield self._event("timeout", state)
                return
            self.log.info("Run %s of %s is %s; %.0f s left", self.run_id, self.dag_id, state, remaining)
            await asyncio.sleep(min(self.poll_interval, remaining))

    def _event(self, status: str, state: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent({
            "status": status, "state": state, "run_id": self.run_id, "dag_id": self.dag_id,
            "waited_seconds": round(time.time() - self.started_at, 1), **extra,
        })
