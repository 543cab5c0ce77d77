"""Diagnoses from evidence (pure): each failure names component, evidence and fix, and only its own check fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import yaml

from remote_agents import naming
from remote_agents.health import contract, gather
from remote_agents.health.diagnose import (
    Expectations,
    Finding,
    QueueEvidence,
    ReleaseEvidence,
    SelfTestEvidence,
    TaskEvidence,
    TokenEvidence,
    WorkloadEvidence,
    diagnose_agent_token,
    diagnose_all,
    diagnose_workloads,
    evidence_from_dict,
    evidence_to_dict,
)
from remote_agents.notifiers import incident_transition
from remote_agents.render.values import build_common_env
from remote_agents.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
NONCE, DIGEST = "n1", contract.canary_digest("n1", "secret-value")
ROLE = "sandbox-remote-agents"
EXPECT = Expectations(
    environment="sandbox", queues=("default",), xcom_bucket="xb", xcom_prefix="xcom", log_bucket="lb",
    log_prefix="logs", variables_prefix="airflow/variables", connections_prefix="airflow/connections",
    timeout_seconds=300, canary_digest=DIGEST, queue_roles={"default": ROLE},
)


def healthy_queue(queue: str = "default", **changes: object) -> QueueEvidence:
    tasks = {name: TaskEvidence(contract.queue_task_id(queue, name), "success", queue) for name in contract.QUEUE_TASKS}
    fields: dict[str, object] = {
        "queue": queue, "tasks": tasks,
        "xcom_reference": f"s3://aws_default@xb/xcom/{contract.SELFTEST_DAG_ID}/r/{queue}.xcom_produce/u",
        "xcom_object_found": True, "consume": {"checksum": "ok"},
        "canary": {"variable": DIGEST, "connection": DIGEST, "shadowed_by_env": []},
        "identity_arn": f"arn:aws:sts::123456789012:assumed-role/{ROLE}/pod", "marker_in_api_log": True,
        "api_log_source": "s3://lb/logs/x", "log_object_key": "logs/x", "log_object_found": True,
    }
    fields.update(changes)
    return QueueEvidence(**fields)  # type: ignore[arg-type]


def with_tasks(queue: QueueEvidence, **states: tuple[str | None, str | None]) -> dict[str, TaskEvidence]:
    tasks = dict(queue.tasks)
    for name, (state, error) in states.items():
        tasks[name] = TaskEvidence(contract.queue_task_id(queue.queue, name), state, queue.queue, error)
    return tasks


def run(*queues: QueueEvidence, deferred: str = "success", waited: float = 12.0) -> SelfTestEvidence:
    return SelfTestEvidence("r", "success", waited, {q.queue: q for q in queues},
                            TaskEvidence(contract.DEFERRED_WAIT, deferred, "default"))


def failing(selftest: SelfTestEvidence, expect: Expectations = EXPECT) -> dict[str, list[str]]:
    return {check: [f.message for f in found] for check, found in diagnose_all(selftest, expect).items() if found}


def test_healthy_evidence_has_no_finding() -> None:
    assert failing(run(healthy_queue())) == {}


def test_queue_without_worker_is_only_a_queue_finding() -> None:
    stuck = QueueEvidence("gpu", {n: TaskEvidence(contract.queue_task_id("gpu", n), "queued", "gpu") for n in contract.QUEUE_TASKS})
    expect = Expectations(**{**EXPECT.__dict__, "queues": ("default", "gpu")})

    result = failing(run(healthy_queue(), stuck, waited=300), expect)

    assert list(result) == ["queues"]
    assert result["queues"][0].startswith("queue `gpu`: self-test stayed queued 300 s")
    assert "no worker agent consumes this queue (workers[].queue)" in result["queues"][0]


def test_queue_missing_from_the_selftest_dag_names_the_queues_variable() -> None:
    expect = Expectations(**{**EXPECT.__dict__, "queues": ("default", "gpu")})

    assert "REMOTE_AGENTS_QUEUES" in failing(run(healthy_queue()), expect)["queues"][0]


def test_xcom_denied_names_the_path_and_the_role_and_nothing_else_fails() -> None:
    queue = healthy_queue()
    error = "ClientError: An error occurred (403) when calling the HeadObject operation: Forbidden"
    tasks = with_tasks(queue, xcom_produce=("failed", error), xcom_consume=("upstream_failed", None))

    result = failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks, "xcom_reference": None})))

    assert list(result) == ["xcom"]
    assert "access denied on s3://xb/xcom/" in result["xcom"][0] and f"role {ROLE} lacks the S3 policy" in result["xcom"][0]


def test_xcom_written_to_local_disk_names_the_missing_path_setting() -> None:
    queue = healthy_queue(xcom_reference="/tmp/remote_agents_selftest/r/x/u")
    tasks = with_tasks(queue, xcom_consume=("failed", "TypeError: string indices must be integers"))

    result = failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks})))

    assert list(result) == ["xcom"]
    assert "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH is missing from commonEnv" in result["xcom"][0]


def test_xcom_bucket_missing_says_so() -> None:
    queue = healthy_queue()
    tasks = with_tasks(queue, xcom_produce=("failed", "ClientError: NoSuchBucket"), xcom_consume=("upstream_failed", None))
    expect = Expectations(**{**EXPECT.__dict__, "xcom_bucket_exists": False})

    assert failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks})), expect)["xcom"][0].startswith(
        "XCom on queue `default`: XCom bucket xb does not exist")


def test_stale_canary_is_a_secrets_finding() -> None:
    queue = healthy_queue(canary={"variable": "old", "connection": "old", "shadowed_by_env": []})

    result = failing(run(queue))

    assert list(result) == ["secrets"] and "stale canary value" in result["secrets"][0]


@pytest.mark.parametrize(
    ("exists", "expected"),
    [(True, "secrets backend prefix wrong on the agents"), (False, "canary secret airflow/variables/remote_agents_canary__sandbox is gone")],
)
def test_canary_not_found_tells_a_wrong_prefix_from_a_deleted_secret(exists: bool, expected: str) -> None:
    queue = healthy_queue(canary=None)
    tasks = with_tasks(queue, read_canary=("failed", "KeyError: 'Variable remote_agents_canary__sandbox does not exist'"))
    expect = Expectations(**{**EXPECT.__dict__, "canary_exists": exists})

    assert expected in failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks})), expect)["secrets"][0]


def test_missing_log_object_blames_remote_logging_settings() -> None:
    result = failing(run(healthy_queue(log_object_found=False, marker_in_api_log=False)))

    assert list(result) == ["logs"]
    assert "no log object under s3://lb/logs/" in result["logs"][0] and "remote logging env missing" in result["logs"][0]


def test_missing_log_bucket_says_so() -> None:
    expect = Expectations(**{**EXPECT.__dict__, "log_bucket_exists": False})

    assert "log bucket lb does not exist" in failing(run(healthy_queue(log_object_found=False)), expect)["logs"][0]


def test_node_role_identity_is_flagged() -> None:
    queue = healthy_queue(identity_arn="arn:aws:sts::123456789012:assumed-role/sandbox-eks-node/i-0abc")

    result = failing(run(queue))

    assert list(result) == ["identity"] and "agents run as sandbox-eks-node, not the IRSA role" in result["identity"][0]


ONPREM_USER_ARN = "arn:aws:iam::123456789012:user/onprem-agents"


def test_static_credentials_identity_is_the_connections_user() -> None:
    """On-prem agents authenticate with the keys of the spec's Connection: that user is healthy, another is not."""
    spec = load_spec(ROOT / "include" / "environments" / "onprem.yaml")
    expect = gather.expectations(spec, static_identity_arn=ONPREM_USER_ARN)
    queue = spec.workers[0].queue

    assert "identity" not in failing(run(healthy_queue(queue, identity_arn=ONPREM_USER_ARN)), expect)
    (other,) = failing(run(healthy_queue(queue, identity_arn="arn:aws:iam::123456789012:user/someone-else")),
                       expect)["identity"]
    assert "user/someone-else" in other and "agents_aws" in other


def test_per_component_roles_compare_each_queue_with_its_workers_role() -> None:
    """With one role per component, a worker that runs as the Dag processor's role is a finding."""
    data = yaml.safe_load((ROOT / "include" / "environments" / "sandbox.yaml").read_text())
    data["identity"] = {"mode": "irsa", "per_component": True}
    spec = parse_spec(data)
    roles = naming.irsa_role_names(spec)
    expect = gather.expectations(spec)
    queue = spec.workers[0].queue

    def as_role(role: str) -> QueueEvidence:
        return healthy_queue(queue, identity_arn=f"arn:aws:sts::123456789012:assumed-role/{role}/pod")

    assert "identity" not in failing(run(as_role(roles[naming.WORKER])), expect)
    wrong = failing(run(as_role(roles[naming.DAG_PROCESSOR])), expect)["identity"]
    assert len(wrong) == 1 and roles[naming.DAG_PROCESSOR] in wrong[0] and roles[naming.WORKER] in wrong[0]


def test_deferred_task_not_resumed_blames_the_triggerer() -> None:
    assert "triggerer agent" in failing(run(healthy_queue(), deferred="deferred"))["deferral"][0]


def test_api_error_is_the_only_finding() -> None:
    selftest = SelfTestEvidence("", "unknown", 0, {}, api_error="unreachable (ConnectError)")

    assert list(failing(selftest)) == ["deployment_api"]


def test_unready_worker_names_the_deployment_queue_and_pod_reason() -> None:
    workloads = [WorkloadEvidence("astro-agent-worker-gpu", "worker", "gpu", True, 1, 0, 3, ("container worker: CrashLoopBackOff",))]

    (finding,) = diagnose_workloads(workloads, ReleaseEvidence("astro-agent", "ns", "deployed", 1, "2.3.3", "2.3.3"))

    assert finding.component == "worker Deployment astro-agent-worker-gpu (queue `gpu`)"
    assert "CrashLoopBackOff" in finding.evidence and "kubectl logs --previous" in finding.fix


def test_failed_release_is_a_workloads_finding() -> None:
    (finding,) = diagnose_workloads([], ReleaseEvidence("astro-agent", "ns", "failed", 4, "2.3.3", "2.3.3"))

    assert "revision 4 is failed, not deployed" in finding.message


def test_revoked_agent_token_tells_how_to_rotate() -> None:
    (finding,) = diagnose_agent_token(TokenEvidence("astro-agent-token", True, "tok-1", live=False))

    assert "token tok-1 is revoked or expired" in finding.message and "rotate_tokens=true" in finding.fix


@pytest.mark.parametrize(("days_left", "warned"), [(3.5, True), (14.0, True), (14.5, False), (None, False)])
def test_token_near_its_end_is_a_warning_not_an_error(days_left: float | None, warned: bool) -> None:
    token = TokenEvidence("astro-registry", True, "tok-2", live=True, kind="registry token", days_left=days_left)
    findings = diagnose_agent_token(token, warning_days=14)
    assert [(f.severity, f.component) for f in findings] == (
        [("warning", "registry token (Secret astro-registry)")] if warned else [])
    if warned:
        assert findings[0].message.startswith("warning: ") and "rotate_tokens=true" in findings[0].fix


def test_a_warning_survives_the_xcom_round_trip() -> None:
    (finding,) = diagnose_agent_token(TokenEvidence("t", True, "tok", live=True, days_left=1.0))
    assert Finding.from_dict(finding.to_dict()) == finding


def test_evidence_round_trips_through_xcom_dicts() -> None:
    selftest = run(healthy_queue())

    assert evidence_from_dict(evidence_to_dict(selftest)) == selftest


@pytest.mark.parametrize(
    ("previous", "failed", "expected"),
    [(None, [], None), (None, ["xcom"], "incident"), ({"failed_checks": ["xcom"]}, ["xcom"], None),
     ({"failed_checks": ["xcom"]}, ["logs", "xcom"], "incident"), ({"failed_checks": ["xcom"]}, [], "recovery")],
)
def test_incident_transition_notifies_only_on_change(previous: dict | None, failed: list[str], expected: str | None) -> None:
    assert incident_transition(previous, failed) == expected


def test_common_env_lists_the_worker_queues_for_the_selftest_dag() -> None:
    spec = load_spec(ROOT / "include" / "environments" / "sandbox.yaml")

    env = {item["name"]: item["value"] for item in build_common_env(spec)}

    assert contract.parse_queues(env[contract.QUEUES_VARIABLE]) == ["default", "heavy"]


def test_selftest_dag_repeats_the_contract_values() -> None:
    """The self-test Dag cannot import the provider on the agents; its copies must match."""
    tree = ast.parse((ROOT / "dags" / "remote_agents_selftest.py").read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)
    }
    tasks = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}

    assert constants["DAG_ID"] == contract.SELFTEST_DAG_ID
    assert constants["MARKER_PREFIX"] == contract.MARKER_PREFIX
    assert constants["QUEUES_VARIABLE"] == contract.QUEUES_VARIABLE
    assert constants["STATE_KEY"] == contract.STATE_KEY
    assert set(contract.QUEUE_TASKS) <= tasks


STATE_EXPECT = Expectations(**{**EXPECT.__dict__, "state_store_location": "s3://xb/state"})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("PermissionError: Access Denied; AccessDenied: An error occurred (AccessDenied) when calling the CreateBucket "
         "operation: Access Denied", "the bucket check (HeadBucket) was refused"),
        ("ClientError: An error occurred (403) when calling the PutObject operation: Forbidden",
         "access denied on s3://xb/state"),
        ("An error occurred (AccessDenied) when calling the AssumeRoleWithWebIdentity operation: Not authorized to "
         "perform sts:AssumeRoleWithWebIdentity", "the agents got no AWS credentials"),
        ("FileNotFoundError: NoSuchBucket", "bucket xb of the state store does not exist"),
    ],
)
def test_state_store_failure_is_its_own_finding_with_the_cause(error: str, expected: str) -> None:
    queue = healthy_queue()
    tasks = with_tasks(queue, state_roundtrip=("failed", error))

    result = failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks})), STATE_EXPECT)

    assert list(result) == ["state_store"] and expected in result["state_store"][0]


def test_state_store_is_not_judged_where_the_spec_has_none() -> None:
    queue = healthy_queue()
    tasks = with_tasks(queue, state_roundtrip=("failed", "KeyError: 'task_state_store'"))
    assert failing(run(QueueEvidence(**{**queue.__dict__, "tasks": tasks}))) == {}
