"""Health checks against the sandbox: a bootstrapped environment, its agents on the stand-in, one fault at a time.

One stand-in serves the whole module (start-up is the slow part). Tests run in file order: healthy
first, then faults that need no restart, then faults in the values (each restarts the stand-in),
then the whole health Dag with dag.test(). Each fault is restored at the end of its test, and each
asserts the failing checks are exactly the expected one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from remote_agents.health import contract
from remote_agents.health.checks import collect_selftest, evaluate_agent_token, evaluate_selftest, evaluate_workloads
from remote_agents.health.diagnose import Finding
from remote_agents.health.gather import write_canary
from remote_agents.naming import canary_secret_names
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.deployment import DeploymentHook
from remote_agents.spec import EnvironmentSpec
from sandbox.environment import Sandbox, conn_env_name

pytestmark = pytest.mark.sandbox

BOOTSTRAP = "remote_agents_bootstrap__sandbox"
HEALTH = "remote_agents_health__sandbox"
RUN_TIMEOUT = 60.0
NO_WORKER_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def environment(sandbox: Sandbox, dagbag: Any) -> Iterator[Sandbox]:
    """A bootstrapped sandbox with its agents running and the Deployment Connection exported."""
    sandbox.reset()
    run = dagbag.get_dag(BOOTSTRAP).test(run_conf={"dry_run": False, "rotate_tokens": False, "force_upgrade": False,
                                                   "skip_cluster_creation": False,
                                                   "chart_version": sandbox.spec.chart.version})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    agents = sandbox.start_agents()
    name = conn_env_name(sandbox.spec.astro.deployment_connection_id)
    os.environ[name] = json.dumps(sandbox.deployment_connection())
    with agents.client() as client:
        client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)
    yield sandbox
    os.environ.pop(name, None)
    sandbox.stop_agents()


@pytest.fixture(scope="module")
def spec(sandbox: Sandbox) -> EnvironmentSpec:
    return sandbox.spec


def access(spec: EnvironmentSpec) -> ClusterAccess:
    assert spec.eks is not None
    return ClusterAccess(eks_cluster_name=spec.eks.name, aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region)


def check_health(
    spec: EnvironmentSpec, timeout: float = RUN_TIMEOUT, after_canary: Callable[[], None] | None = None
) -> dict[str, list[Finding]]:
    """Every check, as the health Dag runs them; returns only the failing ones."""
    results = {"workloads": evaluate_workloads(spec, access(spec)), "agent_token": evaluate_agent_token(spec, access(spec))}
    canary = write_canary(spec, spec.aws_conn_id)
    if after_canary:
        after_canary()
    run: dict[str, Any] | None = None
    started = time.time()
    try:
        with DeploymentHook(spec.astro.deployment_connection_id).get_conn() as client:
            run_id = client.trigger(contract.SELFTEST_DAG_ID, {"nonce": canary["nonce"], "canary": contract.canary_name(spec.name),
                                                              "queues": ["default", "heavy"]})
            state = client.wait(contract.SELFTEST_DAG_ID, run_id, timeout=timeout)
            run = {"run_id": run_id, "state": state, "waited_seconds": time.time() - started}
    except httpx.TransportError:
        run = None
    results.update(evaluate_selftest(spec, collect_selftest(spec, run, canary, spec.aws_conn_id)))
    return {check: findings for check, findings in results.items() if findings}


def messages(failing: dict[str, list[Finding]]) -> list[str]:
    return [finding.message for findings in failing.values() for finding in findings]


def restart_agents(sandbox: Sandbox, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Restart the stand-in with the installed values, changed by ``change`` (a new release revision)."""
    values = sandbox.installed_values()
    if change:
        change(values)
    assert sandbox.agents is not None
    sandbox.agents.restart(values=values)
    os.environ[conn_env_name(sandbox.spec.astro.deployment_connection_id)] = json.dumps(sandbox.deployment_connection())
    with sandbox.agents.client() as client:
        client.wait_for_dag(contract.SELFTEST_DAG_ID, timeout=60)


def set_common_env(values: dict[str, Any], name: str, value: str | None) -> None:
    values["commonEnv"] = [item for item in values["commonEnv"] if item["name"] != name]
    if value is not None:
        values["commonEnv"].append({"name": name, "value": value})


def role_policy(sandbox: Sandbox) -> tuple[str, str, dict[str, Any]]:
    iam = sandbox.aws.admin_client("iam")
    role = sandbox.agents_role_arn().rsplit("/", 1)[1]
    policy_name = iam.list_role_policies(RoleName=role)["PolicyNames"][0]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    return role, policy_name, document if isinstance(document, dict) else json.loads(document)


def check_health_with_role_policy(
    sandbox: Sandbox, spec: EnvironmentSpec, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[str, dict[str, list[Finding]]]:
    """The failing checks while the agents' role has the policy ``change`` makes; the policy is put back after."""
    iam = sandbox.aws.admin_client("iam")
    role, policy_name, document = role_policy(sandbox)
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(change(document)))
    try:
        return role, check_health(spec)
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(document))


def empty_and_delete_bucket(sandbox: Sandbox, bucket: str) -> None:
    s3 = sandbox.aws.admin_client("s3")
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


# -- healthy --------------------------------------------------------------------------------------


def test_healthy_environment_passes_every_check(environment: Sandbox, spec: EnvironmentSpec) -> None:
    assert check_health(spec) == {}


# -- the deferrable self-test operator ---------------------------------------------------------------


def test_selftest_operator_defers_with_the_run_to_poll(environment: Sandbox, spec: EnvironmentSpec) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from remote_agents.operators.selftest import SelfTestRunOperator

    operator = SelfTestRunOperator(task_id="run_selftest", nonce="n-defer", canary=contract.canary_name(spec.name), queues=["default", "heavy"],
                                   deployment_conn_id=spec.astro.deployment_connection_id, timeout_seconds=60,
                                   deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})

    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "remote_agents.triggers.dag_run.DagRunStateTrigger"
    assert kwargs["dag_id"] == contract.SELFTEST_DAG_ID and kwargs["run_id"].startswith("manual__")
    assert kwargs["deployment_conn_id"] == spec.astro.deployment_connection_id
    assert kwargs["deadline"] - kwargs["started_at"] == 60
    assert deferred.value.method_name == "execute_complete"


def test_selftest_operator_without_a_triggerer_waits_in_the_task_for_the_finished_run(
    environment: Sandbox, spec: EnvironmentSpec
) -> None:
    from remote_agents.operators.selftest import SelfTestRunOperator

    canary = write_canary(spec, spec.aws_conn_id)
    operator = SelfTestRunOperator(task_id="run_selftest", nonce=canary["nonce"], canary=contract.canary_name(spec.name),
                                   queues=["default", "heavy"], deployment_conn_id=spec.astro.deployment_connection_id,
                                   timeout_seconds=RUN_TIMEOUT, poll_interval=0.5, deferrable=False)

    result = operator.execute({})  # the same DagRunStateTrigger, run in the task: no TaskDeferred

    assert (result["state"], result["timed_out"]) == ("success", False)
    assert result["run_id"].startswith("manual__") and result["dag_id"] == contract.SELFTEST_DAG_ID


def test_selftest_operator_raises_on_a_failed_wait_event(environment: Sandbox) -> None:
    from remote_agents.hooks.deployment import DeploymentApiError
    from remote_agents.operators.selftest import SelfTestRunOperator

    operator = SelfTestRunOperator(task_id="run_selftest", nonce="n", canary="c")
    with pytest.raises(DeploymentApiError, match="HTTP 403"):
        operator.execute_complete({}, {"status": "error", "message": "reading run r at http://x: HTTP 403", "run_id": "r"})


# -- faults outside the values (no restart) -------------------------------------------------------


def test_worker_never_ready_is_a_workloads_finding_only(environment: Sandbox, spec: EnvironmentSpec) -> None:
    environment.kube.faults.never_ready(name="astro-agent-worker-heavy", reason="CrashLoopBackOff")
    try:
        failing = check_health(spec)
    finally:
        environment.kube.faults.clear()

    assert set(failing) == {"workloads"}
    assert "worker Deployment astro-agent-worker-heavy (queue `heavy`): 0/1 Pods ready" in messages(failing)[0]
    assert "CrashLoopBackOff" in messages(failing)[0]


def test_xcom_policy_statement_removed_names_the_role_and_the_s3_policy(environment: Sandbox, spec: EnvironmentSpec) -> None:
    xcom_objects = "arn:aws:s3:::sandbox-xcom/xcom/*"
    role, failing = check_health_with_role_policy(environment, spec, lambda document: {**document, "Statement": [
        {**s, "Resource": [r for r in s["Resource"] if r != xcom_objects]}
        if isinstance(s["Resource"], list) and xcom_objects in s["Resource"] else s
        for s in document["Statement"]]})

    assert set(failing) == {"xcom"}
    text = "\n".join(messages(failing))
    assert "access denied on s3://sandbox-xcom/xcom/" in text and f"role {role} lacks the S3 policy" in text
    assert "403" in text


def test_list_bucket_conditioned_on_the_prefix_is_diagnosed_as_the_head_bucket_denial(
    environment: Sandbox, spec: EnvironmentSpec
) -> None:
    """The agents' policy before #15: ListBucket only with StringLike s3:prefix, which AWS evaluates as
    a denial of the HeadBucket that s3fs sends before every XCom write."""
    prefixes = ["xcom", "xcom/*", "logs", "logs/*", "state", "state/*"]
    role, failing = check_health_with_role_policy(environment, spec, lambda document: {**document, "Statement": [
        {**s, "Condition": {"StringLike": {"s3:prefix": prefixes}}}
        if s.get("Action") in ("s3:ListBucket", ["s3:ListBucket"]) else s
        for s in document["Statement"]]})

    assert set(failing) == {"xcom", "state_store"}
    xcom, state = ("\n".join(f.message for f in failing[check]) for check in ("xcom", "state_store"))
    assert "the bucket check (HeadBucket) was refused" in xcom
    assert f"role {role} needs s3:ListBucket on arn:aws:s3:::sandbox-xcom without an s3:prefix condition" in xcom
    assert "access denied on s3://sandbox-xcom/state: the bucket check (HeadBucket) was refused" in state


def test_trust_naming_another_service_account_refuses_the_agents_and_names_theirs(
    environment: Sandbox, spec: EnvironmentSpec
) -> None:
    iam = environment.aws.admin_client("iam")
    role, _, _ = role_policy(environment)
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    trust = trust if isinstance(trust, dict) else json.loads(trust)
    elsewhere = json.loads(json.dumps(trust).replace(f"system:serviceaccount:{spec.namespace}:",
                                                     "system:serviceaccount:another-namespace:"))
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(elsewhere))
    try:
        failing = check_health(spec)
    finally:
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(trust))

    subject = f"system:serviceaccount:{spec.namespace}:{spec.resource_name_prefix}-worker-{spec.workers[0].name}"
    identity = "\n".join(f.message for f in failing.get("identity", []))
    assert f"the trust of role {role} refuses the token of {subject}" in identity
    assert "Not authorized to perform sts:AssumeRoleWithWebIdentity" in identity


def test_xcom_bucket_deleted_says_the_bucket_is_missing(environment: Sandbox, spec: EnvironmentSpec) -> None:
    empty_and_delete_bucket(environment, "sandbox-xcom")
    try:
        failing = check_health(spec)
    finally:
        environment.aws.admin_client("s3").create_bucket(Bucket="sandbox-xcom")

    assert set(failing) == {"xcom", "state_store"}  # the state store is kept in the XCom bucket
    assert "XCom bucket sandbox-xcom does not exist" in "\n".join(f.message for f in failing["xcom"])
    assert "bucket sandbox-xcom of the state store does not exist" in "\n".join(f.message for f in failing["state_store"])


def test_canary_deleted_after_writing_says_it_is_gone(environment: Sandbox, spec: EnvironmentSpec) -> None:
    client = environment.aws.admin_client("secretsmanager")
    name = canary_secret_names(spec)["variable"]

    failing = check_health(spec, after_canary=lambda: client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True))

    assert set(failing) == {"secrets"}
    assert f"canary secret {name} is gone" in messages(failing)[0]


def test_log_bucket_missing_says_the_bucket_is_missing(environment: Sandbox, spec: EnvironmentSpec) -> None:
    empty_and_delete_bucket(environment, "sandbox-logs")
    try:
        failing = check_health(spec)
    finally:
        environment.aws.admin_client("s3").create_bucket(Bucket="sandbox-logs")

    assert set(failing) == {"logs"}
    assert "log bucket sandbox-logs does not exist" in messages(failing)[0]


def test_revoked_agent_token_is_flagged(environment: Sandbox, spec: EnvironmentSpec) -> None:
    from remote_agents.hooks.astro import AstroHook

    secret = environment.kube.get_object("Secret", spec.astro.agent_token_secret_name, spec.namespace)
    assert secret is not None
    token_id = secret["metadata"]["annotations"]["remote-agents.astronomer.io/astro-token-id"]
    hook = AstroHook(spec.astro.connection_id)
    hook.delete_agent_token(spec.astro.deployment_id, token_id)
    try:
        failing = check_health(spec)
    finally:
        # The restore is the documented fix: a new token in the Secret (what rotate_tokens does).
        annotations = secret["metadata"]["annotations"]
        new = hook.create_agent_token(spec.astro.deployment_id, name="restored", description="test restore",
                                      expiry_days=spec.astro.agent_token_expiry_days)
        annotations["remote-agents.astronomer.io/astro-token-id"] = new["id"]
        from remote_agents.hooks.kubernetes import ClusterObjects

        ClusterObjects(access(spec)).patch("Secret", secret["metadata"]["name"], spec.namespace,
                                           {"metadata": {"annotations": annotations}})

    assert set(failing) == {"agent_token"}
    assert f"token {token_id} is revoked or expired in Astro" in messages(failing)[0]


def test_tokens_ending_within_the_warning_days_are_warnings_with_the_rotation_fix(
        environment: Sandbox, spec: EnvironmentSpec) -> None:
    # The bootstrap's tokens live astro.agent_token_expiry_days (365); a longer warning window covers them.
    warned = spec.model_copy(update={"health": spec.health.model_copy(update={"token_expiry_warning_days": 400})})
    findings = evaluate_agent_token(warned, access(warned))
    assert [(f.component, f.severity) for f in findings] == [
        (f"agent token (Secret {spec.astro.agent_token_secret_name})", "warning"),
        (f"registry token (Secret {spec.astro.registry_secret_name})", "warning"),
    ]
    assert all("expires in 36" in f.problem and "rotate_tokens=true" in f.fix for f in findings)
    assert evaluate_agent_token(spec, access(spec)) == []


def test_unreachable_deployment_api_is_one_finding(environment: Sandbox, spec: EnvironmentSpec) -> None:
    name = conn_env_name(spec.astro.deployment_connection_id)
    saved = os.environ[name]
    os.environ[name] = json.dumps({**json.loads(saved), "host": "http://127.0.0.1:9"})
    try:
        failing = check_health(spec)
    finally:
        os.environ[name] = saved

    assert set(failing) == {"deployment_api"}
    assert "unreachable (ConnectError)" in messages(failing)[0]


# -- faults in the values (each restarts the stand-in, as a new release revision rolls the agents) --


def test_queue_without_worker_stays_queued_and_names_workers_queue(environment: Sandbox, spec: EnvironmentSpec) -> None:
    restart_agents(environment, lambda v: v.update(workers=[w for w in v["workers"] if w["queues"] != "heavy"]))
    # A just-restarted triggerer can take ~30 s to run its first trigger here; one self-test on the
    # queue that has a worker warms it, so the short wait below measures only the missing worker.
    with DeploymentHook(spec.astro.deployment_connection_id).get_conn() as client:
        warm_up = client.trigger(contract.SELFTEST_DAG_ID, {"nonce": "warm-up", "canary": contract.canary_name(spec.name), "queues": ["default"]})
        client.wait(contract.SELFTEST_DAG_ID, warm_up, timeout=RUN_TIMEOUT)

    failing = check_health(spec, timeout=NO_WORKER_TIMEOUT)

    assert set(failing) == {"queues"}
    message = messages(failing)[0]
    assert message.startswith("queue `heavy`: self-test stayed queued")
    assert "no worker agent consumes this queue (workers[].queue)" in message


def test_xcom_path_removed_from_common_env_names_the_setting(environment: Sandbox, spec: EnvironmentSpec) -> None:
    restart_agents(environment, lambda v: set_common_env(v, "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", None))

    failing = check_health(spec)

    assert set(failing) == {"xcom"}
    assert "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH is missing from commonEnv" in messages(failing)[0]


def test_wrong_secrets_prefix_on_the_agents_names_backend_kwargs(environment: Sandbox, spec: EnvironmentSpec) -> None:
    kwargs = {"connections_prefix": "wrong/connections", "variables_prefix": "wrong/variables", "region_name": "us-east-1"}
    restart_agents(environment, lambda v: set_common_env(v, "AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps(kwargs)))

    failing = check_health(spec)

    assert set(failing) == {"secrets"}
    assert "secrets backend prefix wrong on the agents" in messages(failing)[0]


def test_remote_logging_disabled_says_no_log_object(environment: Sandbox, spec: EnvironmentSpec) -> None:
    restart_agents(environment, lambda v: set_common_env(v, "AIRFLOW__LOGGING__REMOTE_LOGGING", "False"))

    failing = check_health(spec)

    assert set(failing) == {"logs"}
    assert "task succeeded but no log object under s3://sandbox-logs/logs/" in messages(failing)[0]
    assert "remote logging env missing in commonEnv" in messages(failing)[0]


def test_agents_restored_to_the_installed_values_are_healthy(environment: Sandbox, spec: EnvironmentSpec) -> None:
    restart_agents(environment)

    assert check_health(spec) == {}


# -- the whole health Dag -------------------------------------------------------------------------


def health_run(dagbag: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run = dagbag.get_dag(HEALTH).test()
    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=HEALTH, run_id=run.run_id, task_id="report",
                                                 key="return_value").one()
    return run.state, {ti.task_id: ti.state for ti in run.get_task_instances()}, row.value


def test_health_dag_notifies_an_incident_once_then_the_recovery(environment: Sandbox, dagbag: Any) -> None:
    environment.webhook.clear()
    iam = environment.aws.admin_client("iam")
    role, policy_name, document = role_policy(environment)
    xcom_objects = "arn:aws:s3:::sandbox-xcom/xcom/*"
    reduced = {**document, "Statement": [{**s, "Resource": [r for r in s["Resource"] if r != xcom_objects]}
                                         if isinstance(s["Resource"], list) and xcom_objects in s["Resource"] else s
                                         for s in document["Statement"]]}
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(reduced))
    try:
        failed_state, failed_tasks, failed_report = health_run(dagbag)
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    healthy_state, healthy_tasks, healthy_report = health_run(dagbag)

    assert failed_state == "failed"
    # a_task_failed is the leaf that fails the run when a check failed (report itself succeeds).
    assert sorted(t for t, s in failed_tasks.items() if s == "failed") == ["a_task_failed", "check_xcom"]
    assert failed_report["failed_checks"] == ["xcom"]
    assert healthy_state == "success", healthy_tasks
    assert healthy_report == {"healthy": True, "failed_checks": [], "notified": "recovery", "findings": [],
                              "warnings": []}
    incident, recovery = environment.webhook.messages
    assert incident["status"] == "incident" and incident["failed_checks"] == ["xcom"]
    assert "access denied on s3://sandbox-xcom/xcom/" in incident["text"]
    assert recovery["status"] == "recovery" and "healthy again" in recovery["text"]
