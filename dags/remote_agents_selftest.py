"""Self-test of the Remote Execution Agents: runs ON the agents, triggered by `remote_agents_health__<env>`.

Ship this file in the Remote Execution Deployment's Dag bundle. It proves, per worker queue, that
the agents' configuration works where it matters (inside a task on that queue):

- XCom: a payload above the object-storage threshold goes producer -> consumer, its checksum is
  verified, and the consumer finds the object under the XCom prefix with the agent's own credentials;
- secrets: the canary Variable and Connection the health Dag wrote moments before are read through
  the secrets backend; only digests bound to this run's nonce are returned, never the values;
- logging: a line with a unique marker (the health Dag finds it through the API and in the log bucket);
- identity: `sts:GetCallerIdentity` (the health Dag compares it with the environment's IRSA role);
- state store: the nonce written to the task state store and read back (through the object-storage
  backend when `AIRFLOW__WORKERS__STATE_STORE_BACKEND` names one, as it does from chart 2.3);
and, once, a deferrable wait that only the triggerer can finish.

Queues: a Dag's shape is fixed when it is parsed, and it is parsed on the agents, so the queues come
from `REMOTE_AGENTS_QUEUES` in the agents' commonEnv (rendered from the spec's workers), not from a
run's conf. The health Dag passes the queues it expects in the conf and reports any queue this Dag
does not have. A queue no worker consumes leaves its tasks queued: that is the evidence, so no task
here waits for another queue.

Only Airflow and the amazon provider are imported: the agents' image need not contain the
remote-agents provider. The few names shared with the health Dag are repeated below and kept in step
by tests/unit/test_health_diagnose.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG, BaseHook, TaskGroup, Variable, task

DAG_ID = "remote_agents_selftest"
MARKER_PREFIX = "REMOTE-AGENTS-SELFTEST"
QUEUES_VARIABLE = "REMOTE_AGENTS_QUEUES"
DEFERRED_WAIT_SECONDS = 3
STATE_KEY = "remote_agents_nonce"
XCOM_PATH_VARIABLE = "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"
XCOM_THRESHOLD_VARIABLE = "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"
# Added to the threshold, so the payload always goes to object storage (and stays small).
PAYLOAD_MARGIN_BYTES = 4096

log = logging.getLogger(__name__)


def queue_group(queue: str) -> str:
    return "queue_" + re.sub(r"[^A-Za-z0-9_-]", "_", queue)


def parse_queues(text: str | None) -> list[str]:
    queues = [q.strip() for q in (text or "").split(",") if q.strip()]
    return list(dict.fromkeys(queues)) or ["default"]


def canary_digest(nonce: str, value: str) -> str:
    return hashlib.sha256(f"{nonce}:{value}".encode()).hexdigest()


def _nonce(dag_run: Any) -> str:
    nonce = (dag_run.conf or {}).get("nonce")
    if not nonce:
        raise ValueError("no nonce in the run's conf; trigger this Dag from remote_agents_health__<env>")
    return str(nonce)


def _canary(dag_run: Any) -> str:
    name = (dag_run.conf or {}).get("canary")
    if not name:
        raise ValueError("no canary name in the run's conf; trigger this Dag from remote_agents_health__<env>")
    return str(name)


def _payload_bytes() -> int:
    threshold = int(os.environ.get(XCOM_THRESHOLD_VARIABLE) or -1)
    return max(threshold, 0) + PAYLOAD_MARGIN_BYTES


def build_queue_group(queue: str) -> None:
    with TaskGroup(queue_group(queue)):

        @task(queue=queue)
        def xcom_produce(dag_run: Any = None) -> dict[str, Any]:
            padding = secrets.token_hex(_payload_bytes() // 2)
            return {"nonce": _nonce(dag_run), "queue": queue, "padding": padding,
                    "sha256": hashlib.sha256(padding.encode()).hexdigest()}

        @task(queue=queue)
        def xcom_consume(payload: dict[str, Any], dag_run: Any = None, ti: Any = None) -> dict[str, Any]:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            if payload["nonce"] != _nonce(dag_run) or hashlib.sha256(payload["padding"].encode()).hexdigest() != payload["sha256"]:
                raise ValueError("XCom payload did not round-trip: nonce or checksum differs")
            # s3://<conn_id>@<bucket>/<prefix>: the backend writes <prefix>/<dag>/<run>/<task>/<uuid>.
            match = re.match(r"^s3://(?:([^@/]*)@)?([^/]+)/?(.*)$", os.environ.get(XCOM_PATH_VARIABLE, ""))
            if not match:
                raise ValueError(f"{XCOM_PATH_VARIABLE} is not an s3:// path; the payload cannot be in object storage")
            conn_id, bucket, prefix = match.groups()
            producer = ti.task_id.rsplit(".", 1)[0] + ".xcom_produce"
            key_prefix = "/".join(p for p in (prefix.strip("/"), ti.dag_id, ti.run_id, producer) if p) + "/"
            keys = S3Hook(aws_conn_id=conn_id or None).list_keys(bucket_name=bucket, prefix=key_prefix)
            if not keys:
                raise ValueError(f"no XCom object under s3://{bucket}/{key_prefix}")
            return {"checksum": "ok", "bucket": bucket, "object_key": keys[0]}

        @task(queue=queue)
        def read_canary(dag_run: Any = None) -> dict[str, Any]:
            nonce = _nonce(dag_run)
            name = _canary(dag_run)
            variable = Variable.get(name)
            connection = BaseHook.get_connection(name)
            # An env var would win over the backend and prove nothing about it.
            shadowed = [var for var in (f"AIRFLOW_VAR_{name.upper()}", f"AIRFLOW_CONN_{name.upper()}")
                        if var in os.environ]
            return {"variable": canary_digest(nonce, variable),
                    "connection": canary_digest(nonce, connection.password or ""), "shadowed_by_env": shadowed}

        @task(queue=queue)
        def log_marker(dag_run: Any = None) -> str:
            marker = f"{MARKER_PREFIX} {_nonce(dag_run)} queue={queue}"
            print(marker)
            return marker

        @task(queue=queue)
        def identity() -> dict[str, str]:
            from airflow.providers.amazon.aws.hooks.sts import StsHook

            # aws_conn_id=None: boto3's default chain, i.e. the Pod's own (IRSA) credentials.
            caller = StsHook(aws_conn_id=None).conn.get_caller_identity()
            return {"arn": caller["Arn"], "account": caller["Account"]}

        # No XCom: a failure here is the state store's own, never the XCom backend's.
        @task(queue=queue, do_xcom_push=False)
        def state_roundtrip(dag_run: Any = None, task_state_store: Any = None) -> None:
            nonce = _nonce(dag_run)
            task_state_store.set(STATE_KEY, nonce, retention=timedelta(days=1))
            if task_state_store.get(STATE_KEY) != nonce:
                raise ValueError("task state store did not return the value just written")

        xcom_consume(xcom_produce())
        read_canary()
        log_marker()
        identity()
        state_roundtrip()


with DAG(
    dag_id=DAG_ID,
    description="Runs on the agents: proves XCom, secrets, logging and identity work (triggered by the health Dags)",
    dag_display_name="Remote agents self-test",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # A run stuck on a queue nobody consumes must not stay forever.
    dagrun_timeout=timedelta(minutes=30),
    tags=["remote-agents", "selftest"],
    doc_md=__doc__,
) as dag:
    queues = parse_queues(os.environ.get(QUEUES_VARIABLE))
    for _queue in queues:
        build_queue_group(_queue)
    # Rendered when the task starts, so the moment is ahead and the task really defers; not sooner
    # than a few seconds, or Airflow can fail the resumed task (apache/airflow#67287).
    DateTimeSensorAsync(
        task_id="deferred_wait",
        queue=queues[0],
        target_time="{{ (macros.datetime.utcnow() + macros.timedelta(seconds=%d)).isoformat() }}" % DEFERRED_WAIT_SECONDS,
    )
