"""``SelfTestRunOperator``: start the agents' self-test on the Remote Execution Deployment and wait deferred."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from remote_agents.health import contract
from remote_agents.hooks.deployment import DeploymentApiError, DeploymentHook
from remote_agents.operators.base import DEFAULT_DEFERRABLE, defer_or_wait


class SelfTestRunOperator(BaseOperator):
    """Trigger ``remote_agents_selftest`` through the Deployment's REST API, then wait for it to finish:
    in the triggerer (``deferrable``), or polling in the task.

    The run's conf carries ``nonce`` (binds the canary digests and the log marker to this run) and
    ``queues`` (what the caller expects the self-test to cover). Waiting ends when the run finishes
    or after ``timeout_seconds``; a timeout is not an error here: the tasks still queued are the
    evidence the health checks diagnose ("no worker consumes this queue").

    Returns ``{"run_id", "dag_id", "state", "timed_out", "waited_seconds"}``. Raises
    ``DeploymentApiError`` when the API cannot be used (unreachable, token refused, Dag missing).

    Usage in a custom Dag::

        SelfTestRunOperator(
            task_id="run_selftest",
            deployment_conn_id="astro_deployment",
            nonce="{{ run_id | replace(':', '') }}",
            canary="remote_agents_canary__prod",
            queues=["default", "gpu"],
            timeout_seconds=300,
        )

    :param nonce: a value unique to this run, sent in the run's conf
    :param canary: the Variable key and Connection id of the canary the self-test reads
        (``contract.canary_name(environment)``), sent in the run's conf
    :param queues: the queues the self-test is expected to cover, one name or a list, sent in the run's conf
    :param deployment_conn_id: the ``http`` Connection to the Remote Execution Deployment's Airflow
        REST API (host = its Airflow URL, password = a Deployment API token)
    :param selftest_dag_id: the self-test Dag's id on that Deployment
    :param timeout_seconds: seconds to wait for the run to finish (templated: a string is converted to a
        number)
    :param poll_interval: seconds between two checks of the run's state
    :param deferrable: wait for the run in the triggerer; defaults to ``[operators] default_deferrable``
        (off unless set), and without it the same wait runs in the task (not templated)
    """

    template_fields: Sequence[str] = ("deployment_conn_id", "selftest_dag_id", "nonce", "canary", "queues",
                                      "timeout_seconds")

    def __init__(
        self,
        *,
        nonce: str,
        canary: str,
        queues: list[str] | str | None = None,
        deployment_conn_id: str = DeploymentHook.default_conn_name,
        selftest_dag_id: str = contract.SELFTEST_DAG_ID,
        timeout_seconds: float | str = 300,
        poll_interval: float = 5.0,
        deferrable: bool = DEFAULT_DEFERRABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.nonce = nonce
        self.canary = canary
        self.queues = queues
        self.deployment_conn_id = deployment_conn_id
        self.selftest_dag_id = selftest_dag_id
        self.timeout_seconds = timeout_seconds
        self.poll_interval = poll_interval

    def execute(self, context: Any) -> dict[str, Any]:
        hook = DeploymentHook(self.deployment_conn_id)
        if not hook.call(f"looking up Dag {self.selftest_dag_id}", "dag_exists", self.selftest_dag_id):
            raise DeploymentApiError(
                f"Dag {self.selftest_dag_id} is not on the Deployment at {hook.base_url}; add dags/remote_agents_selftest.py "
                "to the Remote Execution Deployment's Dag bundle (and check its import errors)",
                404,
            )
        queues = [self.queues] if isinstance(self.queues, str) else list(self.queues or [])
        started = time.time()
        run_id = hook.call(f"triggering {self.selftest_dag_id}", "trigger", self.selftest_dag_id, {"nonce": self.nonce, "canary": self.canary, "queues": queues})
        self.log.info("Triggered %s run %s on %s; waiting up to %s s", self.selftest_dag_id, run_id, hook.base_url,
                      self.timeout_seconds)
        timeout = float(self.timeout_seconds)
        from remote_agents.triggers.dag_run import DagRunStateTrigger  # Airflow's trigger base: not at Dag parse

        trigger = DagRunStateTrigger(
            deployment_conn_id=self.deployment_conn_id, dag_id=self.selftest_dag_id, run_id=run_id,
            deadline=started + timeout, started_at=started, poll_interval=self.poll_interval,
        )
        return defer_or_wait(self, context, trigger, timedelta(seconds=timeout + 120))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") not in ("success", "timeout"):
            message = (event or {}).get("message", "no event from the trigger")
            raise DeploymentApiError(f"waiting for the self-test run failed: {message}")
        result = {
            "run_id": event["run_id"], "dag_id": event.get("dag_id", self.selftest_dag_id), "state": event["state"],
            "timed_out": event["status"] == "timeout", "waited_seconds": event["waited_seconds"],
        }
        self.log.info("Self-test run %s: %s after %s s%s", result["run_id"], result["state"], result["waited_seconds"],
                      " (timed out)" if result["timed_out"] else "")
        return result
