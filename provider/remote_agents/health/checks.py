"""The health checks of one environment, as plain functions the health Dag's tasks (and tests) call.

``evaluate_management`` reads the cluster and Astro; ``collect_selftest`` reads a self-test run and
the management side's facts; ``evaluate_selftest`` turns them into findings per check. Findings are
plain dicts in XCom (``Finding.to_dict``): no secret ever appears in them. ``fail_on`` is how every
check task (health and drift) ends: each finding logged on its own line, then a one-line failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from remote_agents.health import contract, diagnose, gather
from remote_agents.health.diagnose import Finding, SelfTestEvidence, TokenEvidence
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.deployment import DeploymentApiError, DeploymentHook
from remote_agents.spec import EnvironmentSpec

def fail_on(findings: list[Finding], ti: Any, log: logging.Logger, what: str) -> list[dict[str, str]]:
    """Push the findings (the report task reads them), log each on its own line, and fail the task
    with a one-line summary if any is an error (warnings do not fail it).

    ``AirflowFailException``: a finding is the check's answer, not a crash, so no traceback and no retry.
    """
    payload = [finding.to_dict() for finding in findings]
    ti.xcom_push(key=diagnose.FINDINGS_KEY, value=payload)
    errors = [finding for finding in findings if finding.severity == diagnose.ERROR]
    for finding in findings:
        (log.error if finding in errors else log.warning)("%s", finding.message)
    if errors:
        from airflow.sdk.exceptions import AirflowFailException

        more = f" (and {len(errors) - 1} more, each logged above)" if len(errors) > 1 else ""
        raise AirflowFailException(f"{what}: {errors[0].component}: {errors[0].problem}{more}")
    return payload


def verified(check: str, collected: Mapping[str, Any]) -> list[str]:
    """What a green self-test check verified, per queue, for its log: object keys, digests, ARNs."""
    queues = (collected.get("selftest") or {}).get("queues") or {}
    digest = str((collected.get("facts") or {}).get("canary_digest") or "")[:12]
    lines = {
        diagnose.XCOM: lambda q: f"XCom object {q.get('xcom_reference')} read back by the management side",
        diagnose.SECRETS: lambda q: f"canary Variable and Connection read with digest {digest}…",
        diagnose.LOGS: lambda q: f"log object {q.get('log_object_key')} in the log bucket holds the task's marker",
        diagnose.IDENTITY: lambda q: f"the agent called AWS as {q.get('identity_arn')}",
    }
    describe = lines.get(check)
    return [f"queue {name}: {describe(queue)}" for name, queue in sorted(queues.items())] if describe else []


def evaluate_workloads(spec: EnvironmentSpec, access: ClusterAccess) -> list[Finding]:
    return diagnose.diagnose_workloads(gather.gather_workloads(spec, access), gather.gather_release(spec, access))


def evaluate_agent_token(spec: EnvironmentSpec, access: ClusterAccess) -> list[Finding]:
    """The agent and registry tokens: live, and not about to expire (a warning)."""
    return diagnose_tokens(spec, gather.gather_tokens(spec, access))


def diagnose_tokens(spec: EnvironmentSpec, tokens: list[TokenEvidence]) -> list[Finding]:
    days = spec.health.token_expiry_warning_days
    return [finding for token in tokens for finding in diagnose.diagnose_agent_token(token, days)]


def token_expiry(tokens: list[TokenEvidence]) -> list[dict[str, Any]]:
    """What the status model shows of each token (XCom ``tokens``): when it expires, not its id or value."""
    return [{"kind": token.kind, "live": token.live, "expires_at": token.expires_at} for token in tokens]


def collect_selftest(
    spec: EnvironmentSpec,
    run: dict[str, Any] | None,
    canary: dict[str, str] | None,
    aws_conn_id: str | None,
    deployment_conn_id: str | None = None,
) -> dict[str, Any]:
    """Evidence of a self-test run plus the management side's facts, as one XCom-able dict.

    ``run`` is ``SelfTestRunOperator``'s result; None when it failed, in which case the API is
    probed again so the evidence says why it could not be used.
    """
    conn_id = deployment_conn_id or spec.astro.deployment_connection_id
    hook = DeploymentHook(conn_id)
    facts = {**gather.bucket_facts(spec, aws_conn_id), "canary_exists": gather.canary_exists(spec, aws_conn_id),
             "canary_digest": (canary or {}).get("digest", ""), "static_identity_arn": gather.static_identity_arn(spec)}
    if run is None:
        return {"facts": facts, "selftest": {"api_error": _api_problem(hook)}}
    object_exists = gather.s3_object_exists(aws_conn_id, spec.backends.aws_region)
    try:
        with hook.get_conn() as client:
            evidence = gather.gather_selftest(client, run, spec, object_exists)
    except DeploymentApiError as error:
        return {"facts": facts, "selftest": {"api_error": str(error)}}
    return {"facts": facts, "selftest": asdict(evidence)}


def _api_problem(hook: DeploymentHook) -> str:
    try:
        hook.call("looking up the self-test Dag", "dag_exists", contract.SELFTEST_DAG_ID)
    except DeploymentApiError as error:
        return str(error)
    return "the self-test could not be started or awaited; see the run_selftest task's log"


def evaluate_selftest(spec: EnvironmentSpec, collected: dict[str, Any]) -> dict[str, list[Finding]]:
    expect = gather.expectations(spec, **collected["facts"])
    selftest = _selftest(collected["selftest"])
    return diagnose.diagnose_all(selftest, expect)


def _selftest(data: dict[str, Any]) -> SelfTestEvidence:
    if data.get("api_error"):
        return SelfTestEvidence(run_id="", state="unknown", waited_seconds=0.0, queues={}, api_error=data["api_error"])
    return diagnose.evidence_from_dict(data)

