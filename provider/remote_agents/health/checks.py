"""The health checks of one environment, as plain functions the health Dag's tasks (and tests) call.

``evaluate_management`` reads the cluster and Astro; ``collect_selftest`` reads a self-test run and
the management side's facts; ``evaluate_selftest`` turns them into findings per check. Findings are
plain dicts in XCom (``Finding.to_dict``): no secret ever appears in them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from remote_agents.health import contract, diagnose, gather
from remote_agents.health.diagnose import Finding, SelfTestEvidence
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.deployment import DeploymentApiError, DeploymentHook
from remote_agents.spec import EnvironmentSpec


def evaluate_workloads(spec: EnvironmentSpec, access: ClusterAccess) -> list[Finding]:
    return diagnose.diagnose_workloads(gather.gather_workloads(spec, access), gather.gather_release(spec, access))


def evaluate_agent_token(spec: EnvironmentSpec, access: ClusterAccess) -> list[Finding]:
    """The agent and registry tokens: live, and not about to expire (a warning)."""
    days = spec.health.token_expiry_warning_days
    return [finding for token in gather.gather_tokens(spec, access)
            for finding in diagnose.diagnose_agent_token(token, days)]


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

