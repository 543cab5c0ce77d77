"""Self-test Dag for tests/sandbox/test_standin.py: XCom, secrets, task logs and deferral on the stand-in."""

from __future__ import annotations

import hashlib

import pendulum

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import Variable, dag, task

# Above any sensible threshold, so the payload goes through the object-storage XCom backend.
PAYLOAD_BYTES = 4096


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["sandbox"])
def standin_selftest() -> None:
    @task
    def produce(dag_run=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
        nonce = dag_run.conf["nonce"]
        return {"nonce": nonce, "padding": "x" * PAYLOAD_BYTES}

    @task
    def consume(payload: dict[str, str], dag_run=None) -> str:  # type: ignore[no-untyped-def]
        if payload["nonce"] != dag_run.conf["nonce"] or len(payload["padding"]) != PAYLOAD_BYTES:
            raise ValueError(f"XCom payload did not round-trip: {payload['nonce']!r}")
        return "xcom-ok"

    @task
    def read_canary() -> str:
        # A digest, so the secret itself never lands in XCom.
        return hashlib.sha256(Variable.get("canary").encode()).hexdigest()

    @task
    def emit_marker(dag_run=None) -> str:  # type: ignore[no-untyped-def]
        marker = f"STANDIN-MARKER-{dag_run.conf['nonce']}"
        print(marker)
        return marker

    # Rendered when the task starts, so the moment is always ahead and the task really defers. Not
    # sooner: a trigger that fires before the scheduler has seen the worker's defer-exit makes
    # Airflow fail the resumed task ("state changed externally", apache/airflow#67287).
    DateTimeSensorAsync(
        task_id="deferred_wait",
        target_time="{{ (macros.datetime.utcnow() + macros.timedelta(seconds=3)).isoformat() }}",
    )
    consume(produce())
    read_canary()
    emit_marker()


standin_selftest()
