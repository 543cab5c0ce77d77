"""One human-readable account of a bootstrap or teardown run, built from its tasks' XComs.

Every converging operator returns ``{"changes": [...], **facts}`` (``operators.base.report_changes``);
mapped tasks return a list of those. The summary counts the changes, lists every resource with its
action (and changed fields, already redacted), and ends with the facts a person needs next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remote_agents.spec import EnvironmentSpec

ORDER = ("create", "created", "update", "updated", "drifted", "delete", "deleted", "unchanged", "absent")


def pull_results(ti: Any, task_ids: Iterable[str]) -> dict[str, list[Any]]:
    """Every XCom return value of these tasks; a list of task ids makes xcom_pull return all of a
    mapped task's values too."""
    return {task_id: ti.xcom_pull(task_ids=[task_id]) or [] for task_id in task_ids}


def planned_cluster_contents(spec: EnvironmentSpec, cluster_results: Iterable[Any]) -> list[dict[str, Any]]:
    """A dry run before the EKS cluster exists skips the tasks that would read it (there is nothing to
    read): what they would create, as one more result. Nothing when the cluster exists or is real."""
    from remote_agents import naming
    from remote_agents.changes import Action, Change

    if spec.eks is None:
        return []
    new_cluster = any(
        change["resource"] == f"eks:cluster/{spec.eks.name}" and change["action"] == Action.CREATED.planned()
        for result in cluster_results if isinstance(result, Mapping) for change in result.get("changes", [])
    )
    if not new_cluster:
        return []
    namespace, astro = spec.namespace, spec.astro
    resources = [
        f"k8s:Namespace/{namespace}",
        f"astro:agent-token/{astro.deployment_id}",
        f"k8s:Secret/{namespace}/{astro.agent_token_secret_name}",
        f"astro:api-token/{astro.deployment_id}",
        f"k8s:Secret/{namespace}/{astro.registry_secret_name}",
        *([f"k8s:ConfigMap/{namespace}/{naming.constraints_configmap_name(spec)}"] if any(w.pip_packages for w in spec.workers) else []),
        f"helm:release/{namespace}/{spec.release_name}",
    ]
    return [{"changes": [Change(resource, Action.CREATED, dry_run=True).to_dict() for resource in resources]}]


def flatten_results(results: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(task_id, change) for every change in every task's result, mapped results included."""
    flat = []
    for task_id, result in results.items():
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, Mapping):
                flat.extend((task_id, change) for change in item.get("changes", []))
    return flat


def count_actions(changes: Iterable[tuple[str, dict[str, Any]]]) -> Counter[str]:
    return Counter(change["action"] for _, change in changes)


def mutated(changes: Iterable[tuple[str, dict[str, Any]]]) -> bool:
    return any(change["action"] in ("created", "updated", "deleted") for _, change in changes)


def render_summary(title: str, results: Mapping[str, Any], facts: Mapping[str, Any], next_step: str) -> str:
    changes = flatten_results(results)
    counts = count_actions(changes)
    tally = ", ".join(f"{counts[a]} {a}" for a in ORDER if counts[a]) or "nothing to do"
    lines = [f"# {title}", "", f"**{tally}**", "", "| task | resource | action | changed |", "|---|---|---|---|"]
    for task_id, change in sorted(changes, key=lambda c: (ORDER.index(c[1]["action"]) if c[1]["action"] in ORDER else 99, c[0])):
        changed = ", ".join(f"`{path}`" for path in change.get("diff", {})) or ""
        lines.append(f"| {task_id} | `{change['resource']}` | {change['action']} | {changed} |")
    if facts:
        lines += ["", "| fact | value |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in facts.items() if v is not None)]
    return "\n".join([*lines, "", f"**Next:** {next_step}", ""])
