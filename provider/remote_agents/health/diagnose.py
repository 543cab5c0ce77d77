"""From gathered evidence to findings: what failed, where, the evidence and the likely fix. Pure.

Every function takes the evidence the health Dag gathered (plain dataclasses, built from the
Kubernetes API, the Astro API, the Deployment's REST API and S3/Secrets Manager reads) and the
expectations derived from the spec, and returns a list of ``Finding``s; an empty list means healthy.

Attribution: one broken thing must yield one finding, not one per check it disturbs. A task that
never started on its queue is the queue's finding only; a failure whose error names the XCom
object storage is XCom's, whichever task hit it; a check whose evidence is missing for a reason
another check already reports is not evaluated rather than failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from remote_agents.health import contract

# Checks, in the order the health Dag shows them.
WORKLOADS = "workloads"
AGENT_TOKEN = "agent_token"
DEPLOYMENT_API = "deployment_api"
QUEUES = "queues"
XCOM = "xcom"
SECRETS = "secrets"
LOGS = "logs"
IDENTITY = "identity"
STATE_STORE = "state_store"
DEFERRAL = "deferral"
DRIFT = "drift"
CHECKS = (WORKLOADS, AGENT_TOKEN, DEPLOYMENT_API, QUEUES, XCOM, SECRETS, LOGS, IDENTITY, STATE_STORE, DEFERRAL)
NOT_STARTED = frozenset({None, "none", "scheduled", "queued"})
RESTART_LIMIT = 5
_XCOM_ERROR = re.compile(r"xcom_objectstorage|XCom|HeadObject|PutObject|NoSuchBucket|s3fs", re.IGNORECASE)
_DENIED = re.compile(r"AccessDenied|\(403\)|Forbidden|not authorized", re.IGNORECASE)
_NOT_FOUND = re.compile(r"not found|does not exist|KeyError|AirflowNotFoundException|ResourceNotFound", re.IGNORECASE)


ERROR = "error"
WARNING = "warning"
FINDINGS_KEY = "findings"  # the XCom key each check task pushes its findings under
TOKENS_KEY = "tokens"  # check_agent_token's XCom of each token's kind, liveness and expiry (never the token)


@dataclass(frozen=True)
class Finding:
    """One failed check: ``component`` (what), ``problem`` and ``evidence`` (why we say so), ``fix``.

    A ``warning`` is something that still works but will not for long (a token about to expire):
    it is reported, and it does not fail the check.
    """

    check: str
    component: str
    problem: str
    evidence: str
    fix: str
    severity: str = ERROR

    @property
    def message(self) -> str:
        prefix = "warning: " if self.severity == WARNING else ""
        return f"{prefix}{self.component}: {self.problem} — {self.evidence} — fix: {self.fix}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        fields = ("check", "component", "problem", "evidence", "fix")
        return cls(**{key: str(data[key]) for key in fields}, severity=str(data.get("severity", ERROR)))


# -- evidence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectations:
    """What a healthy environment looks like, from the spec and the management side's own reads."""

    environment: str
    queues: tuple[str, ...]
    xcom_bucket: str
    xcom_prefix: str
    log_bucket: str
    log_prefix: str
    variables_prefix: str
    connections_prefix: str
    timeout_seconds: float
    canary_digest: str = ""
    canary_exists: bool = True
    xcom_bucket_exists: bool = True
    log_bucket_exists: bool = True
    # queue -> `system:serviceaccount:<ns>:<name>` of its worker, which the IRSA trust must name
    queue_subjects: Mapping[str, str] = field(default_factory=dict)
    # s3://<bucket>/<prefix> of the task state store, when the spec gives the agents one
    state_store_location: str | None = None
    # queue -> the IRSA role its worker's ServiceAccount is annotated with (empty without IRSA)
    queue_roles: Mapping[str, str] = field(default_factory=dict)
    # static credentials: the Connection whose keys the agents hold, and the ARN STS reports for them
    # (empty when the management side could not resolve it)
    static_credentials_conn_id: str | None = None
    static_identity_arn: str = ""

    def identity_of(self, queue: str) -> str:
        """Who the agents on ``queue`` act as in AWS, for a fix that says whose policy to change."""
        if self.static_credentials_conn_id is not None:
            return f"the IAM identity of Connection {self.static_credentials_conn_id} ({self.static_identity_arn or 'unresolved'})"
        return f"role {self.queue_roles.get(queue, '<unknown>')}"


@dataclass(frozen=True)
class TaskEvidence:
    """One self-test task as the Deployment's API shows it; ``error`` is the exception it logged."""

    task_id: str
    state: str | None
    queue: str | None = None
    error: str | None = None

    @property
    def started(self) -> bool:
        return self.state not in NOT_STARTED

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


@dataclass(frozen=True)
class QueueEvidence:
    """Everything the health side read about one queue's task group."""

    queue: str
    tasks: Mapping[str, TaskEvidence]  # by short name, contract.QUEUE_TASKS
    xcom_reference: Any = None  # the producer's XCom as the metadata DB holds it (an s3:// path when offloaded)
    xcom_object_found: bool | None = None  # the object at that path, read by the management side
    consume: Mapping[str, Any] | None = None
    canary: Mapping[str, Any] | None = None
    identity_arn: str | None = None
    marker_in_api_log: bool | None = None
    api_log_source: str | None = None  # where the API server said it read the log from
    log_object_key: str | None = None
    log_object_found: bool | None = None

    def task(self, name: str) -> TaskEvidence:
        return self.tasks.get(name) or TaskEvidence(contract.queue_task_id(self.queue, name), None, self.queue)


@dataclass(frozen=True)
class SelfTestEvidence:
    run_id: str
    state: str
    waited_seconds: float
    queues: Mapping[str, QueueEvidence]
    deferred_wait: TaskEvidence | None = None
    api_error: str | None = None  # the Deployment API could not be used at all


@dataclass(frozen=True)
class WorkloadEvidence:
    """One agent Deployment: desired/ready replicas, restarts, and why its Pods are not ready."""

    name: str
    component: str
    queue: str | None
    exists: bool
    desired: int = 0
    ready: int = 0
    restarts: int = 0
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseEvidence:
    name: str
    namespace: str
    status: str | None  # None: no such release
    revision: int | None = None
    chart_version: str | None = None
    expected_chart_version: str | None = None


@dataclass(frozen=True)
class TokenEvidence:
    secret_name: str
    secret_exists: bool
    token_id: str | None
    live: bool | None  # None: the Astro API could not be asked
    api_error: str | None = None
    kind: str = "agent token"  # or "registry token"
    days_left: float | None = None  # None: the token never expires (or is not live)
    expires_at: str | None = None  # Astro's endAt, ISO 8601; None as for days_left


# -- checks on the management side ----------------------------------------------------------------


def diagnose_workloads(workloads: Iterable[WorkloadEvidence], release: ReleaseEvidence) -> list[Finding]:
    findings = []
    if release.status is None:
        findings.append(Finding(
            WORKLOADS, f"Helm release {release.namespace}/{release.name}", "not installed",
            "helm finds no such release", "run remote_agents_bootstrap__<env>",
        ))
    elif release.status != "deployed":
        findings.append(Finding(
            WORKLOADS, f"Helm release {release.namespace}/{release.name}",
            f"revision {release.revision} is {release.status}, not deployed",
            f"helm status {release.status}", "re-run the bootstrap (it recovers pending releases) or roll back",
        ))
    elif release.expected_chart_version and release.chart_version != release.expected_chart_version:
        findings.append(Finding(
            WORKLOADS, f"Helm release {release.namespace}/{release.name}",
            f"chart {release.chart_version} is deployed, the spec says {release.expected_chart_version}",
            f"revision {release.revision}", "re-run the bootstrap to install the spec's chart version",
        ))
    for workload in workloads:
        what = f"{workload.component} Deployment {workload.name}" + (f" (queue `{workload.queue}`)" if workload.queue else "")
        if not workload.exists:
            findings.append(Finding(WORKLOADS, what, "missing", "the Kubernetes API has no such Deployment",
                                    "re-run the bootstrap; check the release's workers[] names"))
        elif workload.ready < workload.desired:
            reasons = "; ".join(workload.problems) or "Pods not ready"
            findings.append(Finding(
                WORKLOADS, what, f"{workload.ready}/{workload.desired} Pods ready", reasons,
                _pod_fix(workload.problems),
            ))
        elif workload.restarts >= RESTART_LIMIT:
            findings.append(Finding(
                WORKLOADS, what, f"containers restarted {workload.restarts} times", "restartCount of its Pods",
                "read the previous container logs (kubectl logs --previous); a few restarts at install are normal",
            ))
    return findings


def _pod_fix(problems: Iterable[str]) -> str:
    text = " ".join(problems)
    if "ImagePull" in text or "ErrImagePull" in text:
        return "check the agent image tag and the registry pull Secret (imagePullSecretName)"
    if "CrashLoopBackOff" in text:
        return "the agent keeps exiting: read kubectl logs --previous (token, Deployment URL, allowed IP ranges)"
    if "CreateContainerConfigError" in text:
        return "a Secret the Pod references is missing (agentTokenSecretName, credentials Secret)"
    if "Unschedulable" in text:
        return "no node fits: add nodes or lower the worker resources"
    return "describe the Pods (kubectl describe pod) and check the node group"


def diagnose_agent_token(token: TokenEvidence, warning_days: int = 14) -> list[Finding]:
    """One Astro token the agents depend on (the agent token, or the registry pull token)."""
    component = f"{token.kind} (Secret {token.secret_name})"
    rotate = "re-run remote_agents_bootstrap__<env> with rotate_tokens=true (new token, Secret updated"
    rotate += ", agents restarted)" if token.kind == "agent token" else ")"
    if not token.secret_exists:
        return [Finding(AGENT_TOKEN, component, "Secret missing", "the Kubernetes API has no such Secret",
                        "re-run the bootstrap (ensure_agent_token, ensure_registry_secret)")]
    if not token.token_id:
        return [Finding(AGENT_TOKEN, component, "no token id recorded", "the Secret has no astro-token-id annotation",
                        "re-run the bootstrap with rotate_tokens to issue a tracked token")]
    if token.live is None:
        return [Finding(AGENT_TOKEN, component, "liveness unknown", token.api_error or "the Astro API did not answer",
                        "check the Astro API connection (astro.connection_id) and its token")]
    if not token.live:
        consequence = "the agents cannot heartbeat" if token.kind == "agent token" else "new agent Pods cannot pull"
        return [Finding(AGENT_TOKEN, component, f"token {token.token_id} is revoked or expired in Astro",
                        f"the Astro API no longer lists it as a live token; {consequence}", rotate)]
    if token.days_left is not None and token.days_left <= warning_days:
        return [Finding(AGENT_TOKEN, component, f"token {token.token_id} expires in {token.days_left:.1f} days",
                        f"Astro's endAt for it is within health.token_expiry_warning_days ({warning_days})",
                        rotate, severity=WARNING)]
    return []


# -- checks on the self-test run -------------------------------------------------------------------


def diagnose_deployment_api(selftest: SelfTestEvidence | None, api_error: str | None = None) -> list[Finding]:
    error = api_error or (selftest.api_error if selftest else None)
    if error:
        return [Finding(DEPLOYMENT_API, "Remote Execution Deployment API", "unusable", error,
                        "check deployment_connection_id (host and API token) and the Deployment's status in Astro")]
    return []


def _usable(selftest: SelfTestEvidence | None) -> bool:
    return selftest is not None and not selftest.api_error


def _stuck(evidence: QueueEvidence) -> bool:
    return any(not evidence.task(name).started for name in contract.QUEUE_TASKS)


def _queue_evaluable(evidence: QueueEvidence, task: TaskEvidence) -> bool:
    """Whether a check can judge this task: it started, and its failure is not XCom's to report."""
    return task.started and not (task.state == "failed" and _is_xcom_error(task.error) and task.task_id.endswith(
        tuple(f".{name}" for name in (contract.READ_CANARY, contract.LOG_MARKER, contract.IDENTITY))))


def _is_xcom_error(error: str | None) -> bool:
    return bool(error and _XCOM_ERROR.search(error))


def diagnose_queues(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    if not _usable(selftest):
        return []
    assert selftest is not None
    findings = []
    for queue in expect.queues:
        evidence = selftest.queues.get(queue)
        if evidence is None:
            findings.append(Finding(
                QUEUES, f"queue `{queue}`", "the self-test Dag has no task group for it",
                f"{contract.SELFTEST_DAG_ID} was parsed without `{queue}` in {contract.QUEUES_VARIABLE}",
                f"re-run the bootstrap so commonEnv has {contract.QUEUES_VARIABLE}; the agents' Dag processor re-parses it",
            ))
        elif _stuck(evidence):
            waiting = sorted(t.task_id for t in evidence.tasks.values() if not t.started) or [contract.queue_group(queue)]
            findings.append(Finding(
                QUEUES, f"queue `{queue}`",
                f"self-test stayed queued {selftest.waited_seconds:.0f} s",
                f"{', '.join(waiting)} never started",
                "no worker agent consumes this queue (workers[].queue) or its worker has no free slot; "
                "add a worker for it or check that worker's Pods",
            ))
    return findings


def diagnose_xcom(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    if not _usable(selftest):
        return []
    assert selftest is not None
    findings = []
    where = f"s3://{expect.xcom_bucket}/{expect.xcom_prefix}/"
    for queue, evidence in selftest.queues.items():
        produce, consume = evidence.task(contract.XCOM_PRODUCE), evidence.task(contract.XCOM_CONSUME)
        component = f"XCom on queue `{queue}`"
        failed = next((t for t in (produce, consume) if t.state in ("failed", "upstream_failed") and t.error), None)
        failed = failed or next((t for name, t in evidence.tasks.items()
                                 if name != contract.STATE_ROUNDTRIP and t.state == "failed" and _is_xcom_error(t.error)), None)
        if _stuck(evidence) and not failed:
            continue  # the queue's finding
        # Where the payload went explains a consumer's failure better than the consumer's error does.
        misplaced = _xcom_object(component, evidence, expect, where) if produce.succeeded else []
        if misplaced:
            findings.extend(misplaced)
        elif failed:
            findings.append(_xcom_failure(component, queue, failed, expect, where))
        elif produce.started and not (produce.succeeded and consume.succeeded):
            findings.append(Finding(XCOM, component, f"{produce.task_id} {produce.state}, {consume.task_id} {consume.state}",
                                    "no error text could be read (task logs unavailable)",
                                    "read the task log in the Deployment's UI"))
    return findings


def _xcom_failure(component: str, queue: str, task: TaskEvidence, expect: Expectations, where: str) -> Finding:
    error = task.error or ""
    who = expect.identity_of(queue)
    if _web_identity_refused(error):
        return Finding(XCOM, component, "the agents got no AWS credentials: the IRSA role's trust refused their token",
                       f"{task.task_id}: {error}", "see the identity check: the trust must name the worker's ServiceAccount")
    if "xcom_objectstorage_path" in error.lower():
        return Finding(XCOM, component, "the XCom backend has no object-storage path",
                       f"{task.task_id}: {error}",
                       "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH is missing from commonEnv; re-run the bootstrap")
    if not expect.xcom_bucket_exists or "NoSuchBucket" in error:
        return Finding(XCOM, component, f"XCom bucket {expect.xcom_bucket} does not exist",
                       f"{task.task_id}: {error or 'the bucket is gone'}",
                       f"create the bucket {expect.xcom_bucket} or fix backends.xcom.bucket in the spec")
    if _bucket_check_refused(error):
        return Finding(XCOM, component, f"access denied on {where}: the bucket check (HeadBucket) was refused",
                       f"{task.task_id}: {error}",
                       f"{who} needs s3:ListBucket on arn:aws:s3:::{expect.xcom_bucket} without an s3:prefix "
                       "condition (HeadBucket sends no prefix, so AWS denies a prefix-conditioned grant); re-run the "
                       "bootstrap to restore the rendered policy")
    if _DENIED.search(error):
        return Finding(XCOM, component, f"access denied on {where}",
                       f"{task.task_id}: {error}",
                       f"{who} lacks the S3 policy (s3:PutObject/GetObject on {expect.xcom_bucket}/{expect.xcom_prefix}/*, "
                       f"s3:ListBucket on {expect.xcom_bucket}); re-run the bootstrap to restore it")
    return Finding(XCOM, component, f"{task.task_id} failed", error,
                   "read the task log; check the XCom backend settings in commonEnv")


def _xcom_object(component: str, evidence: QueueEvidence, expect: Expectations, where: str) -> list[Finding]:
    reference = evidence.xcom_reference
    produce_id = evidence.task(contract.XCOM_PRODUCE).task_id
    if isinstance(reference, str) and not reference.startswith("s3://"):
        return [Finding(XCOM, component, "the payload was written to the worker's local disk, not S3",
                        f"{produce_id}'s XCom points at {reference!r}",
                        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH is missing from commonEnv (or not an s3:// URL); "
                        "re-run the bootstrap")]
    if not isinstance(reference, str):
        return [Finding(XCOM, component, "the payload stayed in the metadata database",
                        f"{produce_id}'s XCom is a value, not an s3:// path",
                        "set AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH/_THRESHOLD in commonEnv (double underscores)")]
    key = reference.split("@", 1)[-1].removeprefix("s3://")
    if not key.startswith(f"{expect.xcom_bucket}/{expect.xcom_prefix}/"):
        return [Finding(XCOM, component, "the payload went to another place",
                        f"{reference} is not under {where}", "fix AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH in commonEnv")]
    if evidence.xcom_object_found is False:
        return [Finding(XCOM, component, "the XCom object is missing", f"nothing at s3://{key}",
                        "check lifecycle rules on the bucket that delete objects early")]
    return []


def diagnose_secrets(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    if not _usable(selftest):
        return []
    assert selftest is not None
    findings = []
    variable = f"{expect.variables_prefix}/{contract.canary_name(expect.environment)}"
    for queue, evidence in selftest.queues.items():
        task = evidence.task(contract.READ_CANARY)
        component = f"secrets on queue `{queue}`"
        if not _queue_evaluable(evidence, task):
            continue
        if task.state == "failed":
            error = task.error or "no error text (task logs unavailable)"
            if _DENIED.search(error):
                findings.append(Finding(SECRETS, component, "access denied reading the canary", error,
                                        f"{expect.identity_of(queue)} needs secretsmanager:GetSecretValue "
                                        f"on {expect.variables_prefix}/* and {expect.connections_prefix}/*"))
            elif not expect.canary_exists:
                findings.append(Finding(SECRETS, component, f"canary secret {variable} is gone", error,
                                        "something deleted it after the health Dag wrote it (rotation or cleanup "
                                        f"job?); keep {variable} out of such jobs"))
            elif _NOT_FOUND.search(error):
                findings.append(Finding(SECRETS, component, "the agent did not find the canary the health Dag wrote",
                                        f"{variable} exists, but: {error}",
                                        "secrets backend prefix wrong on the agents: AIRFLOW__SECRETS__BACKEND_KWARGS "
                                        f"must have variables_prefix={expect.variables_prefix!r}, "
                                        f"connections_prefix={expect.connections_prefix!r}"))
            else:
                findings.append(Finding(SECRETS, component, "reading the canary failed", error,
                                        "check AIRFLOW__SECRETS__BACKEND and its kwargs in the values"))
            continue
        if not task.succeeded or evidence.canary is None:
            continue
        if evidence.canary.get("shadowed_by_env"):
            findings.append(Finding(SECRETS, component, "the canary came from environment variables, not the backend",
                                    f"set on the agents: {', '.join(evidence.canary['shadowed_by_env'])}",
                                    "remove those variables from commonEnv/workers[].env"))
        elif expect.canary_digest and (evidence.canary.get("variable") != expect.canary_digest
                                       or evidence.canary.get("connection") != expect.canary_digest):
            findings.append(Finding(SECRETS, component, "the agent read a stale canary value",
                                    "its digest differs from the value written before this run",
                                    "secrets backend cache ([secrets] use_cache) or a wrong prefix that holds an old copy"))
    return findings


def diagnose_logs(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    if not _usable(selftest):
        return []
    assert selftest is not None
    findings = []
    where = f"s3://{expect.log_bucket}/{expect.log_prefix}/"
    for queue, evidence in selftest.queues.items():
        task = evidence.task(contract.LOG_MARKER)
        component = f"task logs on queue `{queue}`"
        if not _queue_evaluable(evidence, task) or not task.succeeded:
            continue
        if not expect.log_bucket_exists:
            findings.append(Finding(LOGS, component, f"log bucket {expect.log_bucket} does not exist",
                                    f"{task.task_id} succeeded but its log could not be uploaded",
                                    f"create the bucket {expect.log_bucket} or fix backends.logs.bucket in the spec"))
        elif evidence.log_object_found is False:
            findings.append(Finding(LOGS, component, f"task succeeded but no log object under {where}",
                                    f"missing s3://{expect.log_bucket}/{evidence.log_object_key}",
                                    "remote logging env missing in commonEnv (AIRFLOW__LOGGING__REMOTE_LOGGING, "
                                    "REMOTE_BASE_LOG_FOLDER, REMOTE_LOG_CONN_ID), or the role cannot s3:PutObject there"))
        elif evidence.marker_in_api_log is False:
            findings.append(Finding(LOGS, component, "the marker is not in the log the Deployment's API serves",
                                    f"log object exists; the API read from {evidence.api_log_source or 'elsewhere'}",
                                    "set the task log bucket on the Deployment (Remote Execution settings) and "
                                    "give Astro its read role"))
    return findings


def diagnose_identity(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    if not _usable(selftest):
        return []
    assert selftest is not None
    findings = []
    for queue, evidence in selftest.queues.items():
        task = evidence.task(contract.IDENTITY)
        component = f"AWS identity on queue `{queue}`"
        if not _queue_evaluable(evidence, task):
            continue
        if task.state == "failed" and _web_identity_refused(task.error):
            subject = expect.queue_subjects.get(queue, "its worker's ServiceAccount")
            findings.append(Finding(IDENTITY, component, f"the trust of {expect.identity_of(queue)} refuses "
                                    f"the token of {subject}", task.error or "",
                                    f"the role's trust policy must name {subject} (StringEquals <issuer>:sub) through "
                                    "the cluster's OIDC provider; re-run the bootstrap to restore it"))
        elif task.state == "failed":
            fix = ("the Pod has no AWS credentials: check the ServiceAccount's role-arn annotation and the cluster's "
                   "OIDC provider" if expect.static_credentials_conn_id is None else
                   "the Pod has no usable AWS keys: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the "
                   f"credentials Secret, or re-run the bootstrap to copy Connection {expect.static_credentials_conn_id} again")
            findings.append(Finding(IDENTITY, component, "sts:GetCallerIdentity failed", task.error or "no error text", fix))
        elif task.succeeded:
            findings.extend(_unexpected_identity(component, queue, evidence.identity_arn or "", expect))
    return findings


def _unexpected_identity(component: str, queue: str, arn: str, expect: Expectations) -> list[Finding]:
    if expect.static_credentials_conn_id is not None:
        if not expect.static_identity_arn:
            return [Finding(IDENTITY, component, f"agents run as {arn}; the expected identity is unknown",
                            f"sts:GetCallerIdentity with Connection {expect.static_credentials_conn_id} failed",
                            f"check that Connection {expect.static_credentials_conn_id} holds valid AWS keys")]
        if arn == expect.static_identity_arn:
            return []
        return [Finding(IDENTITY, component, f"agents run as {arn}, not {expect.identity_of(queue)}",
                        f"GetCallerIdentity: {arn}",
                        f"re-run the bootstrap to copy the keys of Connection {expect.static_credentials_conn_id} "
                        "into the credentials Secret, and remove other AWS keys from the agents' env")]
    expected, role = expect.queue_roles.get(queue), _assumed_role(arn)
    if role == expected:
        return []
    return [Finding(IDENTITY, component, f"agents run as {role or arn}, not the IRSA role {expected}",
                    f"GetCallerIdentity: {arn}",
                    f"annotate the worker's ServiceAccount {expect.queue_subjects.get(queue, '')} with role {expected} "
                    "(serviceAccount.annotations) and restart the agents")]


def _web_identity_refused(error: str | None) -> bool:
    return bool(error and "AssumeRoleWithWebIdentity" in error and _DENIED.search(error))


def _bucket_check_refused(error: str) -> bool:
    # s3fs's mkdir checks the bucket with HeadBucket and, when that is refused, tries to create it
    # (the CreateBucket in the error). AWS authorizes HeadBucket as s3:ListBucket, and the request
    # carries no s3:prefix, so a prefix-conditioned ListBucket denies it.
    return bool(_DENIED.search(error)) and ("HeadBucket" in error or "CreateBucket" in error)


def _assumed_role(arn: str) -> str | None:
    match = re.match(r"^arn:aws[\w-]*:sts::\d+:assumed-role/([^/]+)/", arn)
    return match.group(1) if match else None


def diagnose_state_store(selftest: SelfTestEvidence | None, expect: Expectations) -> list[Finding]:
    """The task state store round trip; only judged where the spec gives the agents a state store."""
    if not _usable(selftest) or expect.state_store_location is None:
        return []
    assert selftest is not None
    findings = []
    where = expect.state_store_location
    for queue, evidence in selftest.queues.items():
        task = evidence.task(contract.STATE_ROUNDTRIP)
        if task.state != "failed":  # the task pushes no XCom, so its failure is the state store's own
            continue
        component, error = f"state store on queue `{queue}`", task.error or "no error text (task logs unavailable)"
        if not expect.xcom_bucket_exists or "NoSuchBucket" in error:
            findings.append(Finding(STATE_STORE, component, f"bucket {expect.xcom_bucket} of the state store does not "
                                    "exist", error, f"create the bucket {expect.xcom_bucket} or fix backends.xcom.bucket"))
        elif _web_identity_refused(error):
            findings.append(Finding(STATE_STORE, component, "the agents got no AWS credentials", error,
                                    "see the identity check: the trust must name the worker's ServiceAccount"))
        elif _bucket_check_refused(error):
            findings.append(Finding(STATE_STORE, component, f"access denied on {where}: the bucket check (HeadBucket) "
                                    "was refused", error,
                                    f"{expect.identity_of(queue)} needs s3:ListBucket on the bucket without an "
                                    "s3:prefix condition (HeadBucket sends no prefix); re-run the bootstrap"))
        elif _DENIED.search(error):
            findings.append(Finding(STATE_STORE, component, f"access denied on {where}", error,
                                    f"{expect.identity_of(queue)} needs s3:PutObject/GetObject on {where}/*; "
                                    "re-run the bootstrap to restore the policy"))
        else:
            findings.append(Finding(STATE_STORE, component, f"{task.task_id} failed", error,
                                    "check AIRFLOW__WORKERS__STATE_STORE_BACKEND and "
                                    "AIRFLOW__COMMON_IO__STATE_STORE_OBJECTSTORAGE_PATH in the values"))
    return findings


def diagnose_deferral(selftest: SelfTestEvidence | None) -> list[Finding]:
    if not _usable(selftest) or selftest is None or selftest.deferred_wait is None:
        return []
    task = selftest.deferred_wait
    if task.state == "deferred" or (task.state == "failed" and "Trigger" in (task.error or "")):
        return [Finding(DEFERRAL, "triggerer agent", f"{task.task_id} was not resumed",
                        f"state {task.state} after {selftest.waited_seconds:.0f} s; {task.error or ''}".rstrip("; "),
                        "check the triggerer Deployment's Pods and logs")]
    if task.state == "failed":
        return [Finding(DEFERRAL, "triggerer agent", f"{task.task_id} failed", task.error or "no error text",
                        "read its log; the triggerer may not import the sensor's trigger")]
    return []


def diagnose_all(selftest: SelfTestEvidence | None, expect: Expectations) -> dict[str, list[Finding]]:
    """The self-test checks by name (management-side checks take their own evidence)."""
    return {
        DEPLOYMENT_API: diagnose_deployment_api(selftest),
        QUEUES: diagnose_queues(selftest, expect),
        XCOM: diagnose_xcom(selftest, expect),
        SECRETS: diagnose_secrets(selftest, expect),
        LOGS: diagnose_logs(selftest, expect),
        IDENTITY: diagnose_identity(selftest, expect),
        STATE_STORE: diagnose_state_store(selftest, expect),
        DEFERRAL: diagnose_deferral(selftest),
    }


def findings_text(findings: Iterable[Finding]) -> str:
    return "\n".join(f"- {finding.message}" for finding in findings)


def evidence_to_dict(selftest: SelfTestEvidence) -> dict[str, Any]:
    return asdict(selftest)


def evidence_from_dict(data: Mapping[str, Any]) -> SelfTestEvidence:
    queues = {
        name: QueueEvidence(**{**q, "tasks": {k: TaskEvidence(**t) for k, t in q["tasks"].items()}})
        for name, q in data["queues"].items()
    }
    deferred = TaskEvidence(**data["deferred_wait"]) if data.get("deferred_wait") else None
    return SelfTestEvidence(**{**data, "queues": queues, "deferred_wait": deferred})

