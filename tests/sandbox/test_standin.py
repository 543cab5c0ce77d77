"""The agents' stand-in: a real Airflow whose tasks use the installed values' backends against moto as the IRSA role.

One stand-in for the whole module (start-up is the slow part). The tests run in file order:
the successful self-test run first, then an IAM denial, then a restart with changed values.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.aws import AwsEmulator
from sandbox.environment import Sandbox
from sandbox.moto_iam import service_account_token
from sandbox.standin import AgentStandIn, AirflowRestClient, agent_env, worker_queues

pytestmark = pytest.mark.sandbox

DAG_ID = "standin_selftest"
DAG_FILE = Path(__file__).parent / "standin_dags" / "standin_selftest.py"
XCOM_BUCKET, LOG_BUCKET = "sandbox-xcom", "sandbox-logs"
ROLE_NAME = "standin-agent"
POLICY_NAME = "agent-backends"
RUN_TIMEOUT = 90.0
XCOM_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
SECRETS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
STATE_STORE_BACKEND = "airflow.providers.common.io.state_store.backend.StateStoreObjectStorageBackend"


def installed_values(xcom_path: str = f"s3://aws_default@{XCOM_BUCKET}/xcom") -> dict[str, Any]:
    """Chart values as `helm get values -o json --all` returns them, shaped like the renderer's output."""
    backend_kwargs = {
        "connections_prefix": "airflow/connections",
        "variables_prefix": "airflow/variables",
        "region_name": "us-east-1",
    }
    common_env = {
        "ASTRO_DEPLOYMENT_ID": "sandbox-deployment",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": xcom_path,
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "0",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(backend_kwargs),
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOG_BUCKET}/logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_default",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "extra": {"region_name": "us-east-1"}}),
    }
    return {
        "resourceNamePrefix": "astro-agent",
        "xcomBackend": XCOM_BACKEND,
        "secretBackend": SECRETS_BACKEND,
        "stateStoreBackend": STATE_STORE_BACKEND,
        "dagBundleConfigList": '[{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}}]',
        "logLevel": "INFO",
        "commonEnv": [{"name": name, "value": value} for name, value in common_env.items()],
        "workers": [{"name": "default-worker", "queues": "default"}, {"name": "heavy", "queues": "heavy"}],
    }


def role_policy(account_id: str, *, xcom: bool = True) -> dict[str, Any]:
    """Least privilege for the agents: objects under the XCom and log prefixes, secrets under airflow/."""
    object_arns = [f"arn:aws:s3:::{LOG_BUCKET}/logs/*"] + ([f"arn:aws:s3:::{XCOM_BUCKET}/xcom/*"] if xcom else [])
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": object_arns},
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": [f"arn:aws:s3:::{XCOM_BUCKET}", f"arn:aws:s3:::{LOG_BUCKET}"],
            },
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": f"arn:aws:secretsmanager:us-east-1:{account_id}:secret:airflow/*",
            },
        ],
    }


@dataclass(frozen=True)
class AgentIdentity:
    aws: AwsEmulator
    role_arn: str
    token_file: Path
    canary: str

    def put_policy(self, *, xcom: bool = True) -> None:
        document = json.dumps(role_policy(self.aws.account_id, xcom=xcom))
        self.aws.admin_client("iam").put_role_policy(RoleName=ROLE_NAME, PolicyName=POLICY_NAME, PolicyDocument=document)


@dataclass(frozen=True)
class SelftestRun:
    run_id: str
    nonce: str
    state: str


@pytest.fixture(scope="module")
def identity(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AgentIdentity:
    """As admin: OIDC provider, IRSA role with the agents' policy, the canary secret (buckets are seeded)."""
    sandbox.reset()
    aws = sandbox.aws
    iam = aws.admin_client("iam")
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/STANDIN"
    provider_arn = iam.create_open_id_connect_provider(
        Url=f"https://{issuer}", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["9" * 40]
    )["OpenIDConnectProviderArn"]
    subject = "system:serviceaccount:astro-agents:astro-agent-worker-default-worker"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}},
            }
        ],
    }
    role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    canary = secrets.token_hex(8)
    aws.admin_client("secretsmanager").create_secret(Name="airflow/variables/canary", SecretString=canary)
    token_file = tmp_path_factory.mktemp("irsa") / "token"
    token_file.write_text(service_account_token(f"https://{issuer}", *subject.rsplit(":", 2)[1:]))
    result = AgentIdentity(aws, role_arn, token_file, canary)
    result.put_policy()
    return result


@pytest.fixture(scope="module")
def standin(identity: AgentIdentity, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStandIn]:
    dags = tmp_path_factory.mktemp("standin_dags")
    shutil.copy(DAG_FILE, dags)
    aws_env = identity.aws.irsa_env(identity.role_arn, str(identity.token_file))
    agents = AgentStandIn(tmp_path_factory.mktemp("standin"), dags, installed_values(), aws_env)
    # Static keys in the test process must not reach the agents (they would bypass the role).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "leaked-test-process-key")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-test-process-secret")
        agents.start()
    yield agents
    ports = agents.ports
    pids = list(agents.pids.values())
    agents.stop()
    assert not [pid for pid in pids if _alive(pid)], "a stand-in process survived stop()"
    assert not [port for port in (ports.api, ports.worker_log_server, ports.trigger_log_server) if _listening(port)]


@pytest.fixture(scope="module")
def client(standin: AgentStandIn) -> Iterator[AirflowRestClient]:
    with standin.client() as rest:
        rest.wait_for_dag(DAG_ID, timeout=60)
        yield rest


@pytest.fixture(scope="module")
def selftest_run(client: AirflowRestClient) -> SelftestRun:
    return _run_selftest(client)


def _run_selftest(client: AirflowRestClient) -> SelftestRun:
    nonce = uuid.uuid4().hex
    run_id = client.trigger(DAG_ID, {"nonce": nonce})
    return SelftestRun(run_id, nonce, client.wait(DAG_ID, run_id, timeout=RUN_TIMEOUT))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _s3_keys(aws: AwsEmulator, bucket: str, prefix: str) -> list[str]:
    listing = aws.admin_client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _xcom_object(aws: AwsEmulator, path: str) -> Any:
    """Read an XCom object (its path as the API returns it, `s3://<conn>@bucket/key`) as admin."""
    bucket, key = path.split("@", 1)[1].split("/", 1)
    return json.loads(aws.admin_client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def _task_failure(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(type, message) of each exception in the chain the task logged when it failed."""
    return [
        (detail["exc_type"], detail["exc_value"])
        for event in events
        if event.get("event") == "Task failed with exception"
        for detail in event.get("error_detail", [])
    ]


def _events_text(events: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(event, default=str) for event in events)


# -- the values -> environment mapping (pure, fast) ------------------------------------------


def test_agent_env_takes_backends_and_common_env_from_the_values() -> None:
    env = agent_env(installed_values())

    assert env["AIRFLOW__CORE__XCOM_BACKEND"] == XCOM_BACKEND
    assert env["AIRFLOW__SECRETS__BACKEND"] == SECRETS_BACKEND
    assert env["AIRFLOW__WORKERS__STATE_STORE_BACKEND"] == STATE_STORE_BACKEND
    assert env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] == "s3://aws_default@sandbox-xcom/xcom"
    assert json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"]) == {"conn_type": "aws", "extra": {"region_name": "us-east-1"}}
    assert "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST" not in env


def test_agent_env_drops_only_the_astro_runtime_logging_config() -> None:
    values = installed_values()
    values["commonEnv"].append(
        {"name": "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS", "value": "astronomer.runtime.logging.logging_config"}
    )

    env = agent_env(values)

    assert "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS" not in env
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == "s3://sandbox-logs/logs"


def test_worker_queues_are_the_queues_of_the_workers_list() -> None:
    assert worker_queues(installed_values()) == {"default", "heavy"}


# -- one self-test run on the agents --------------------------------------------------------


def test_agent_processes_get_a_clean_environment(standin: AgentStandIn, identity: AgentIdentity) -> None:
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{standin.pids['scheduler']}/environ").read_text().split("\0")
        if "=" in item
    )

    assert "AWS_ACCESS_KEY_ID" not in environ and "AWS_SECRET_ACCESS_KEY" not in environ
    assert environ["AWS_ROLE_ARN"] == identity.role_arn
    assert environ["AIRFLOW_HOME"] == str(standin.home) != os.environ["AIRFLOW_HOME"]
    # The test process carries the sandbox's admin Connections; only the values' Connection may reach the agents.
    assert sorted(name for name in environ if name.startswith("AIRFLOW_CONN_")) == ["AIRFLOW_CONN_AWS_DEFAULT"]
    assert environ["AIRFLOW_CONN_AWS_DEFAULT"] == agent_env(installed_values())["AIRFLOW_CONN_AWS_DEFAULT"]


def test_selftest_run_succeeds_with_every_task(client: AirflowRestClient, selftest_run: SelftestRun) -> None:
    task_states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, selftest_run.run_id)}

    assert selftest_run.state == "success", task_states
    assert set(task_states.values()) == {"success"}
    assert set(task_states) == {"produce", "consume", "read_canary", "emit_marker", "deferred_wait"}


def test_xcom_payload_went_to_s3_under_the_xcom_prefix(
    client: AirflowRestClient, selftest_run: SelftestRun, identity: AgentIdentity
) -> None:
    path = client.xcom(DAG_ID, selftest_run.run_id, "produce")

    assert path.startswith(f"s3://aws_default@{XCOM_BUCKET}/xcom/{DAG_ID}/{selftest_run.run_id}/produce/")
    assert _xcom_object(identity.aws, path)["nonce"] == selftest_run.nonce
    assert client.xcom(DAG_ID, selftest_run.run_id, "consume").startswith(f"s3://aws_default@{XCOM_BUCKET}/xcom/")


def test_canary_was_read_through_the_secrets_manager_backend(
    client: AirflowRestClient, selftest_run: SelftestRun, identity: AgentIdentity
) -> None:
    digest = _xcom_object(identity.aws, client.xcom(DAG_ID, selftest_run.run_id, "read_canary"))

    assert digest == hashlib.sha256(identity.canary.encode()).hexdigest()


def test_marker_is_in_the_task_log_the_api_read_from_s3(
    client: AirflowRestClient, selftest_run: SelftestRun, identity: AgentIdentity
) -> None:
    events = client.log_events(DAG_ID, selftest_run.run_id, "emit_marker", try_number=1)
    log_key = f"logs/dag_id={DAG_ID}/run_id={selftest_run.run_id}/task_id=emit_marker/attempt=1.log"

    assert f"STANDIN-MARKER-{selftest_run.nonce}" in [event.get("event") for event in events]
    # The api-server has no access to the agents' local logs: its log source must be the bucket.
    assert f"s3://{LOG_BUCKET}/{log_key}" in [event.get("event") for event in events]
    assert log_key in _s3_keys(identity.aws, LOG_BUCKET, log_key)


def test_deferrable_task_was_resumed_by_the_triggerer(
    client: AirflowRestClient, selftest_run: SelftestRun, identity: AgentIdentity
) -> None:
    prefix = f"logs/dag_id={DAG_ID}/run_id={selftest_run.run_id}/task_id=deferred_wait/attempt=1.log"

    # The triggerer writes (and uploads) a log of its own for each trigger it ran.
    assert any(".trigger." in key for key in _s3_keys(identity.aws, LOG_BUCKET, prefix))
    assert "Trigger fired event" in _events_text(client.log_events(DAG_ID, selftest_run.run_id, "deferred_wait"))


# -- what the role's policy decides ----------------------------------------------------------


def test_producer_is_denied_when_the_role_lacks_the_xcom_prefix(
    client: AirflowRestClient, identity: AgentIdentity
) -> None:
    identity.put_policy(xcom=False)  # moto re-reads policies on every request: no restart needed
    try:
        run = _run_selftest(client)
    finally:
        identity.put_policy()
    task_states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run.run_id)}

    assert run.state == "failed"
    assert task_states["produce"] == "failed"
    assert task_states["consume"] == "upstream_failed"
    # s3fs first HEADs the new key; a denied HEAD has no body, so AWS (and moto) answer a bare 403,
    # not "AccessDenied": a diagnosis must read a 403 on the XCom path as a missing permission.
    assert ("ClientError", "An error occurred (403) when calling the HeadObject operation: Forbidden") in (
        _task_failure(client.log_events(DAG_ID, run.run_id, "produce", try_number=1))
    )


# -- a new release revision ------------------------------------------------------------------


def test_restart_applies_the_new_values(standin: AgentStandIn) -> None:
    old_pids = list(standin.pids.values())
    moved = f"s3://aws_default@{XCOM_BUCKET}/xcom/v2"

    standin.restart(values=installed_values(xcom_path=moved))
    with standin.client() as rest:
        rest.wait_for_dag(DAG_ID, timeout=60)
        run = _run_selftest(rest)
        path = rest.xcom(DAG_ID, run.run_id, "produce")

    assert not [pid for pid in old_pids if _alive(pid)]
    assert run.state == "success"
    assert path.startswith(f"{moved}/{DAG_ID}/{run.run_id}/produce/")
