"""Is an EKS cluster (and its node groups) ACTIVE, or gone, yet? One judgement for every waiter.

``cluster_progress`` is shared by ``EksClusterStateTrigger`` (in the triggerer) and by the
operators' in-task wait (``deferrable=False``). It has no Airflow import: the operators' modules
import it, and Dag files import those at every parse.
"""

from __future__ import annotations

from typing import Any, Literal

Target = Literal["active", "deleted"]
DONE, WAITING, FAILED = "done", "waiting", "failed"
_FAILED_STATES = {"FAILED", "CREATE_FAILED", "DELETE_FAILED", "DEGRADED"}


def _issues(resource: dict[str, Any]) -> str:
    issues = resource.get("health", {}).get("issues", [])
    if not issues:
        return "no health issues reported; see the EKS console or CloudTrail for the cause"
    return "; ".join(f"{issue.get('code')}: {issue.get('message')}" for issue in issues)


def cluster_progress(
    cluster_name: str,
    cluster: dict[str, Any] | None,
    nodegroups: dict[str, dict[str, Any] | None],
    target: Target,
    include_cluster: bool = True,
) -> tuple[str, str]:
    """``(DONE | WAITING | FAILED, message)`` for the cluster and node groups against ``target``."""
    if target == "deleted":
        left = [f"node group {name} ({ng['status']})" for name, ng in nodegroups.items() if ng]
        if include_cluster and cluster:
            left.append(f"cluster {cluster_name} ({cluster['status']})")
        failed = [name for name, ng in nodegroups.items() if ng and ng["status"] in _FAILED_STATES]
        if failed:
            return FAILED, f"node group {failed[0]} of {cluster_name} could not be deleted: {_issues(nodegroups[failed[0]] or {})}"
        return (WAITING, "waiting for deletion of " + ", ".join(left)) if left else (DONE, f"{cluster_name}: deleted")
    if cluster is None:
        return FAILED, f"EKS cluster {cluster_name} does not exist (deleted while we waited?); re-run to create it"
    if cluster["status"] in _FAILED_STATES:
        return FAILED, f"EKS cluster {cluster_name} is {cluster['status']}: {_issues(cluster)}; delete it and re-run"
    if cluster["status"] != "ACTIVE":
        return WAITING, f"EKS cluster {cluster_name} is {cluster['status']}"
    for name, nodegroup in nodegroups.items():
        if nodegroup is None:
            return FAILED, f"node group {name} of {cluster_name} does not exist (deleted while we waited?); re-run"
        if nodegroup["status"] in _FAILED_STATES:
            return FAILED, f"node group {name} of {cluster_name} is {nodegroup['status']}: {_issues(nodegroup)}"
        if nodegroup["status"] != "ACTIVE":
            return WAITING, f"node group {name} of {cluster_name} is {nodegroup['status']}"
    return DONE, f"EKS cluster {cluster_name} and {len(nodegroups)} node group(s) are ACTIVE"
