"""One account of a bootstrap or teardown run, built from its tasks' XComs and states.

Every converging operator returns ``{"changes": [...], **facts}`` (``operators.base.report_changes``);
mapped tasks return a list of those, and a failed task leaves its error under the XCom key
``failure`` (``record_failure``, the Dags' failure callback). ``build_report`` turns these into the
structured report the summary task returns (its XCom: outcome, failures, what was not attempted,
every resource with its action, facts, the next step); ``render_report`` is its markdown, which
leads with what failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remote_agents.spec import EnvironmentSpec

FAILURE_KEY = "failure"
MAX_ERROR = 1500
# Task states of a run that ended: these tasks never ran (a task upstream failed, or the run stopped).
NOT_ATTEMPTED = frozenset({None, "none", "scheduled", "queued", "upstream_failed", "removed", "up_for_reschedule"})
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


def record_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: keep the failed task's error (redacted, bounded) for the run's summary."""
    from remote_agents.hooks.helm import redact_text

    error = context.get("exception")
    text = redact_text(f"{type(error).__name__}: {error}" if error else "failed (no exception recorded)")
    context["ti"].xcom_push(key=FAILURE_KEY, value=text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…")


def run_states(ti: Any, task_ids: Iterable[str]) -> dict[str, str | None]:
    """The state of each of ``task_ids`` in the current run, through the task SDK (no database)."""
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=list(task_ids))
    return {task_id: state for task_id, state in (states.get(ti.run_id) or {}).items()}


def pull_failures(ti: Any, states: Mapping[str, str | None]) -> dict[str, str]:
    return {task_id: str(ti.xcom_pull(task_ids=task_id, key=FAILURE_KEY) or "failed; see the task's log")
            for task_id, state in states.items() if state == "failed"}


def build_report(*, kind: str, environment: str, dry_run: bool, results: Mapping[str, Any],
                 states: Mapping[str, str | None], failures: Mapping[str, str], facts: Mapping[str, Any],
                 next_step: str) -> dict[str, Any]:
    """The run's structured account. ``next_step`` is the one for a run that did not fail; a failed
    run's next step is to fix its first failure and re-run, which converges from where it stopped."""
    changes = sorted(flatten_results(results), key=lambda c: (_rank(c[1]["action"]), c[0]))
    dag_id = f"remote_agents_{kind}__{environment}"
    if failures:
        first = next(iter(failures))
        next_step = (f"fix what `{first}` reports above, then trigger `{dag_id}` again: it converges from where "
                     "this run stopped (what was made is found again, nothing is made twice).")
    return {
        "kind": kind,
        "environment": environment,
        "dag_id": dag_id,
        "dry_run": dry_run,
        "tags": ["dry_run"] if dry_run else [],
        "outcome": "failed" if failures else "planned" if dry_run else "applied",
        "failures": [{"task_id": task_id, "error": error} for task_id, error in failures.items()],
        "not_attempted": sorted(task_id for task_id, state in states.items() if state in NOT_ATTEMPTED),
        "counts": {action: count for action, count in sorted(count_actions(changes).items(), key=lambda i: _rank(i[0]))},
        "resources": [{"task_id": task_id, "resource": change["resource"], "action": change["action"],
                       "changed": list(change.get("diff", {}))} for task_id, change in changes],
        "facts": {key: value for key, value in facts.items() if value is not None},
        "next_step": next_step,
    }


def render_report(report: Mapping[str, Any]) -> str:
    """The report as markdown: what failed (and what was not attempted) first, then every resource."""
    what = "Teardown" if report["kind"] == "teardown" else "Bootstrap"
    mode = " plan (dry run: nothing was changed)" if report["dry_run"] else ""
    outcome = " FAILED" if report["outcome"] == "failed" else ""
    lines = [f"# {what}{mode} of environment `{report['environment']}`{outcome}", ""]
    if report["failures"]:
        lines += ["**Failed:**", "", *(f"- `{f['task_id']}`: {f['error']}" for f in report["failures"]), ""]
        if report["not_attempted"]:
            lines += [f"**Not attempted** (a task before them failed): {', '.join(f'`{t}`' for t in report['not_attempted'])}", ""]
    tally = ", ".join(f"{count} {action}" for action, count in report["counts"].items()) or "nothing to do"
    lines += [f"**{'Done before the failure: ' if report['failures'] else ''}{tally}**", "",
              "| task | resource | action | changed |", "|---|---|---|---|"]
    lines += [f"| {r['task_id']} | `{r['resource']}` | {r['action']} | {', '.join(f'`{p}`' for p in r['changed'])} |"
              for r in report["resources"]]
    if report["facts"]:
        lines += ["", "| fact | value |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in report["facts"].items())]
    return "\n".join([*lines, "", f"**Next:** {report['next_step']}", ""])


def _rank(action: str) -> int:
    return ORDER.index(action) if action in ORDER else len(ORDER)
