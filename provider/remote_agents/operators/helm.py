"""Operators that converge a Helm release: install/upgrade with a deferred rollout wait, roll back, uninstall.

Each reads the release first and acts only on a difference, so a re-run makes no change and reports
``unchanged``. The cluster is the ``ClusterOperator``'s (a Kubernetes connection or an EKS cluster).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from remote_agents.changes import Action, Change, diff_values
from remote_agents.errors import ConfigError, HelmError
from remote_agents.hooks.helm import (
    DEFAULT_CHART,
    ApiServerBusyError,
    DEFAULT_CHART_REPO_URL,
    ChartRef,
    FailedReleaseError,
    HelmHook,
    Release,
    ReleaseNotFoundError,
    ReleaseStatus,
    RolloutFailedError,
    Workload,
    last_good_revision,
    redact_data,
    redact_text,
)
from remote_agents.operators.base import (
    CLUSTER_TEMPLATE_FIELDS,
    DEFAULT_DEFERRABLE,
    ClusterOperator,
    as_bool,
    defer_or_wait,
    report_changes,
)

if TYPE_CHECKING:
    from remote_agents.triggers.rollout import RolloutTrigger

RELEASE_TEMPLATE_FIELDS = (*CLUSTER_TEMPLATE_FIELDS, "release_name", "namespace")


def release_resource(namespace: str, name: str) -> str:
    return f"helm:release/{namespace}/{name}"


def _change_from_dict(change: Mapping[str, Any]) -> Change:
    return Change(change["resource"], Action(change["action"]), dict(change["diff"]), bool(change["dry_run"]))


def _as_values(values: Any, task_id: str) -> dict[str, Any]:
    """The rendered ``values`` as plain JSON data (what helm will store and ``helm get values`` returns)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            [f"values: expected a dict, got {type(values).__name__}; pass a dict or an XComArg of one "
             "(a Jinja string renders to text unless the Dag sets render_template_as_native_obj=True)"],
            task_id,
        )
    try:
        return json.loads(json.dumps(values))
    except (TypeError, ValueError) as error:
        raise ConfigError([f"values: not JSON-serialisable ({error}); use only str, int, float, bool, list, dict"],
                          task_id) from None


class _HelmReleaseOperator(ClusterOperator):
    """What the Helm operators share: the release, the helm binary, the time helm may take.

    :param release_name: the Helm release
    :param namespace: the release's namespace
    :param timeout: seconds each helm command may take (its ``--timeout``); an upgrade's rollout wait
        has as long again
    :param helm_binary: the helm 3 binary (>= 3.8, < 4), a path or a name on PATH; None means ``helm``
    """

    def __init__(
        self, *, release_name: str, namespace: str, timeout: int = 600, helm_binary: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release_name = release_name
        self.namespace = namespace
        self.timeout = timeout
        self.helm_binary = helm_binary

    @property
    def hook(self) -> HelmHook:
        return HelmHook(self.cluster_access, helm_binary=self.helm_binary)

    @property
    def resource(self) -> str:
        return release_resource(self.namespace, self.release_name)


class HelmUpgradeInstallOperator(_HelmReleaseOperator):
    """Install or upgrade a Helm release to a chart version and values; wait for its Deployments, deferred.

    Flow: read the release; recover it if an earlier run left it ``pending-*`` (killed mid-way) or
    ``failed`` (roll back to the last deployed revision, or uninstall a first install that never
    deployed); skip when the deployed chart name, version and values already equal the desired
    ones, unless ``force`` (helm then re-applies the manifest, putting back chart objects edited by
    hand, which a values comparison cannot see); else ``helm upgrade --install`` without ``--wait`` or ``--atomic`` and defer to
    ``RolloutTrigger`` until every Deployment of the release is ready. The operator does what
    ``--atomic`` would itself, so the wait can defer: if helm fails to apply the upgrade (e.g. the
    API server refuses a write), or the rollout times out, it rolls back to the previous deployed
    revision (uninstalls a first install) and fails the task, naming helm's error or each unready
    Deployment and why. Should that rollback fail too, the release stays ``failed`` or ``pending-*``
    and the next run rolls it back first. ``deferrable=False`` runs the same wait in the worker.

    Returns ``{"changes": [...], "release", "namespace", "revision", "status", "chart",
    "chart_version"}`` (plus ``recovered_from`` after a recovery; ``objects`` in a dry run, which only
    renders with ``helm template``). ``values`` must hold no secret: name Secrets instead.

    Usage in a custom Dag::

        HelmUpgradeInstallOperator(
            task_id="install_agents",
            eks_cluster_name="prod-agents", aws_conn_id="aws_default", region_name="eu-west-1",
            release_name="astro-agent", namespace="astro-agents",
            chart="astro-remote-execution-agent", chart_repo_url="https://helm.astronomer.io",
            chart_version="2.3.3",
            values=render_values.output,  # an XComArg: the dict from render/values.build_values
            timeout=900,
        )

    :param values: the chart values as a dict, or an XComArg of one (templated: a Jinja string
        renders to text unless the Dag sets ``render_template_as_native_obj=True``); no secrets
    :param chart: the chart's name in ``chart_repo_url``, or a local chart directory when that is empty
    :param chart_repo_url: the Helm repository; None or empty for a local chart
    :param chart_version: the chart version, required for a repository chart; for a local chart, if
        given, it must equal the chart's own version
    :param force: upgrade even when chart and values already match, so helm puts back chart objects
        edited by hand (templated: the strings ``"True"``/``"False"`` are accepted)
    :param deferrable: wait for the rollout in the triggerer; defaults to ``[operators] default_deferrable``
        (off unless set), and without it the same wait runs in the task (not templated)
    :param poll_interval: seconds between two checks of the rollout
    """

    template_fields: Sequence[str] = (*RELEASE_TEMPLATE_FIELDS, "chart", "chart_repo_url", "chart_version", "values",
                                      "force")
    template_fields_renderers = {"values": "json"}

    def __init__(
        self,
        *,
        values: dict[str, Any] | None = None,
        chart: str = DEFAULT_CHART,
        chart_repo_url: str | None = DEFAULT_CHART_REPO_URL,
        chart_version: str | None = None,
        force: bool | str = False,
        deferrable: bool = DEFAULT_DEFERRABLE,
        poll_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.values = values
        self.chart = chart
        self.chart_repo_url = chart_repo_url
        self.chart_version = chart_version
        self.force = force
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def execute(self, context: Any) -> dict[str, Any]:
        values = _as_values(self.values, self.task_id)
        chart = ChartRef(self.chart, self.chart_repo_url or None, self.chart_version or None)
        hook = self.hook
        current = hook.get_release(self.release_name, self.namespace)
        recovered_from = None
        if current is not None and current.status.is_unfinished:
            if self.is_dry_run:
                self.log.warning("Release %s is %s; a real run recovers it first", self.resource,
                                 current.status.value)
            else:
                recovered_from = current.status.value
                current = self._recover(hook, current)

        chart_name, chart_version = hook.chart_metadata(chart)
        if chart.is_local and chart.version and chart.version != chart_version:
            raise ConfigError([f"chart_version: {chart.version!r} but the local chart {chart.chart} is "
                               f"{chart_version!r}; drop chart_version or point at the matching chart"], self.task_id)
        diff = self._diff(hook, current, values, f"{chart_name}-{chart_version}")
        if current is not None and not diff and not as_bool(self.force):
            unchanged = Change(self.resource, Action.UNCHANGED, dry_run=self.is_dry_run)
            if self.is_dry_run:
                return report_changes(self.log, [unchanged], **current.facts())
            # Nothing to apply is not the same as ready: a run killed during the rollout wait left the
            # release deployed with equal values and its workloads possibly never ready.
            manifest = hook.get_manifest(self.release_name, self.namespace)
            workloads = tuple(Workload(obj["kind"], (obj.get("metadata") or {}).get("namespace") or self.namespace,
                                       obj["metadata"]["name"]) for obj in manifest if obj.get("kind") == "Deployment")
            facts = {**current.facts(), "changes": [unchanged.to_dict()], "unchanged": True}
            trigger = self._rollout_trigger(dataclasses.replace(current, workloads=workloads), facts)
            if trigger is None:
                return self._report(facts)
            return defer_or_wait(self, context, trigger, timedelta(seconds=self.timeout + 60))

        action = Action.CREATED if current is None else Action.UPDATED
        change = Change(self.resource, action, diff, dry_run=self.is_dry_run)
        if self.is_dry_run:
            objects = hook.template(self.release_name, self.namespace, chart, values)
            return report_changes(
                self.log, [change], release=self.release_name, namespace=self.namespace,
                chart=chart_name, chart_version=chart_version,
                objects=[f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}" for obj in objects],
            )

        previous = last_good_revision(hook.history(self.release_name, self.namespace)) if current else None
        try:
            release = hook.upgrade_install(self.release_name, self.namespace, chart, values, timeout=self.timeout)
        except ApiServerBusyError as busy:
            release = self._try_again(hook, chart, values, current, previous, busy)
        except HelmError as error:
            self._raise_undone(hook, current, previous, error)
        self.log.info("Applied %s: revision %d (%s), waiting for its Deployments", self.resource, release.revision,
                      release.status.value)
        facts: dict[str, Any] = {
            **release.facts(),
            "previous_revision": previous,
            "changes": [change.to_dict()],
            **({"recovered_from": recovered_from} if recovered_from else {}),
        }
        trigger = self._rollout_trigger(release, facts)
        if trigger is None:
            return self._report(facts)
        return defer_or_wait(self, context, trigger, timedelta(seconds=self.timeout + 60))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {"status": "failed", "message": "the trigger sent no event"}
        facts = dict(event.get("return_value") or {})
        if event.get("status") == "success":
            self.log.info("Rollout of %s complete: %s ready", self.resource, ", ".join(event.get("ready", [])))
            return self._report(facts)
        if event.get("status") == "error":
            raise HelmError(redact_text(
                f"{self.resource} revision {facts.get('revision', '?')} was applied but its rollout could not be "
                f"checked, so it was left in place: {event.get('message')}"
            ))
        # An unchanged release is left as it is: it was not this run's revision to undo.
        undone = ("the release was unchanged, so it is left as it is: fix the workloads (or re-run with "
                  "force_upgrade)") if facts.get("unchanged") else self._undo_failed_revision(facts)
        unready = {name: redact_text(reason) for name, reason in (event.get("unready") or {}).items()}
        lines = "\n".join(f"  - Deployment {event.get('namespace', self.namespace)}/{name}: {reason}"
                          for name, reason in unready.items())
        message = (
            f"{self.resource} revision {facts.get('revision', '?')}: {event.get('message', 'rollout failed')} "
            f"after {self.timeout}s; {undone}.\n{lines}"
        )
        raise RolloutFailedError(redact_text(message.rstrip()), unready)

    # --- steps ---
    def _recover(self, hook: HelmHook, stuck: Release) -> Release | None:
        """Undo the revision an earlier run left pending or failed, so the upgrade starts from a deployed one."""
        target = last_good_revision(hook.history(self.release_name, self.namespace), before=stuck.revision)
        if stuck.status == ReleaseStatus.FAILED:
            state = f"is failed at revision {stuck.revision} (an earlier upgrade failed and was not undone)"
        else:
            state = f"is stuck in {stuck.status.value} at revision {stuck.revision} (a previous run was interrupted)"
        if target is None:
            self.log.warning("Release %s %s and was never deployed: uninstalling it before installing",
                             self.resource, state)
            hook.uninstall(self.release_name, self.namespace, timeout=self.timeout)
            return None
        self.log.warning("Release %s %s: rolling back to revision %d before upgrading", self.resource, state, target)
        return hook.rollback(self.release_name, self.namespace, target, timeout=self.timeout)

    def _try_again(self, hook: HelmHook, chart: ChartRef, values: dict[str, Any], current: Release | None,
                   previous: int | None, busy: ApiServerBusyError) -> Release:
        """helm does not retry a busy API server: undo the revision it left, then apply once more from there."""
        try:
            self._raise_undone(hook, current, previous, busy)
        except HelmError:
            after = hook.get_release(self.release_name, self.namespace)
            if after is not None and after.status is not ReleaseStatus.DEPLOYED:
                raise
        self.log.warning("%s: the Kubernetes API server was busy, and the release is back as it was; trying once more",
                         self.resource)
        try:
            return hook.upgrade_install(self.release_name, self.namespace, chart, values, timeout=self.timeout)
        except HelmError as error:
            self._raise_undone(hook, after, previous, error)

    def _raise_undone(self, hook: HelmHook, before: Release | None, previous: int | None, error: HelmError) -> NoReturn:
        """Raise ``error``, saying how the revision the failed upgrade left was undone."""
        undone = self._undo_failed_upgrade(hook, before, previous)
        if undone is None:
            raise error
        raise FailedReleaseError(redact_text(f"{error}\n{self.resource}: {undone}"), error.returncode,
                                 error.stderr) from error

    def _undo_failed_upgrade(self, hook: HelmHook, before: Release | None, previous: int | None) -> str | None:
        """Undo the revision a failed ``helm upgrade`` left; what was done, or None when it left none."""
        try:
            after = hook.get_release(self.release_name, self.namespace)
            if after is None or (before is not None and after.revision == before.revision):
                return None  # refused before helm recorded a revision (bad values, no chart)
            return f"helm left revision {after.revision} {after.status.value}; " + self._undo_failed_revision(
                {"previous_revision": previous})
        except HelmError as undo_error:
            return f"undoing the upgrade failed too, so the release may be left failed or pending; the next run " \
                   f"rolls it back first:\n{undo_error}"

    def _diff(self, hook: HelmHook, current: Release | None, values: dict[str, Any], chart: str) -> dict[str, Any]:
        """What would change, values redacted; empty when the deployed release already matches."""
        if current is None:
            deployed_values: dict[str, Any] = {}
            diff: dict[str, Any] = {"chart": {"from": None, "to": chart}}
        else:
            deployed_values = hook.get_values(self.release_name, self.namespace)
            deployed_chart = f"{current.chart_name}-{current.chart_version}"
            diff = {} if deployed_chart == chart else {"chart": {"from": deployed_chart, "to": chart}}
            if current.status != ReleaseStatus.DEPLOYED:
                diff["status"] = {"from": current.status.value, "to": ReleaseStatus.DEPLOYED.value}
        diff.update({f"values.{path}": change for path, change in diff_values(deployed_values, values).items()})
        return redact_data(diff)

    def _rollout_trigger(self, release: Release, facts: dict[str, Any]) -> RolloutTrigger | None:
        deployments = [w for w in release.workloads if w.kind == "Deployment"]
        if not deployments:
            return None
        namespaces = {w.namespace for w in deployments}
        if len(namespaces) > 1:
            raise ConfigError([f"the chart put Deployments in several namespaces {sorted(namespaces)}; the rollout "
                               "wait watches one namespace, set the chart's namespace value"], self.task_id)
        from remote_agents.triggers.rollout import RolloutTrigger  # Airflow's trigger base: not at Dag parse

        return RolloutTrigger(
            access=self.cluster_access.to_dict(),
            namespace=namespaces.pop(),
            deployments=[w.name for w in deployments],
            deadline=time.time() + self.timeout,
            poll_interval=self.poll_interval,
            return_value=facts,
        )

    def _undo_failed_revision(self, facts: dict[str, Any]) -> str:
        """What --atomic would do: back to the previous good revision, or remove a first install."""
        hook = self.hook
        previous = facts.get("previous_revision")
        if previous:
            release = hook.rollback(self.release_name, self.namespace, int(previous), timeout=self.timeout)
            self.log.warning("Rolled %s back to revision %d (now revision %d)", self.resource, previous,
                             release.revision)
            return f"rolled back to revision {previous} (now revision {release.revision})"
        if hook.get_release(self.release_name, self.namespace) is not None:
            hook.uninstall(self.release_name, self.namespace, timeout=self.timeout)
            self.log.warning("Uninstalled %s: its first install did not succeed", self.resource)
        return "uninstalled the release (its first install did not succeed)"

    def _report(self, facts: dict[str, Any]) -> dict[str, Any]:
        changes = [_change_from_dict(change) for change in facts.pop("changes", [])]
        facts.pop("previous_revision", None)
        facts.pop("unchanged", None)
        return report_changes(self.log, changes, **facts)


class HelmRollbackOperator(_HelmReleaseOperator):
    """Roll a Helm release back to ``revision``; ``unchanged`` when it already runs that revision's chart and values.

    Returns ``{"changes": [...], "release", "namespace", "revision", "status", "chart", "chart_version",
    "rolled_back_to"}``.

    Usage in a custom Dag::

        HelmRollbackOperator(
            task_id="rollback_agents", kubernetes_conn_id="onprem_cluster",
            release_name="astro-agent", namespace="astro-agents", revision="{{ params.revision }}",
        )

    :param revision: the revision to roll back to, as ``helm history`` lists it (templated: a string is
        converted to an int)
    """

    template_fields: Sequence[str] = (*RELEASE_TEMPLATE_FIELDS, "revision")

    def __init__(self, *, revision: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.revision = revision

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            revision = int(self.revision)
        except (TypeError, ValueError):
            revision = 0
        if revision < 1:
            raise ConfigError([f"revision: got {self.revision!r}; give the revision number to roll back to "
                               "(see `helm history`)"], self.task_id)
        hook = self.hook
        current = hook.get_release(self.release_name, self.namespace)
        if current is None:
            raise ReleaseNotFoundError(f"cannot roll back {self.resource}: it is not installed")
        history = {entry.revision: entry for entry in hook.history(self.release_name, self.namespace)}
        if revision not in history:
            raise ConfigError([f"revision: {revision} is not in the history of {self.resource} "
                               f"(revisions {sorted(history)}); pick one of those"], self.task_id)
        target = history[revision]
        diff = diff_values(hook.get_values(self.release_name, self.namespace),
                           hook.get_values(self.release_name, self.namespace, revision=revision))
        diff = {f"values.{path}": change for path, change in diff.items()}
        current_chart, target_chart = (f"{current.chart_name}-{current.chart_version}",
                                       f"{target.chart_name}-{target.chart_version}")
        if current_chart != target_chart:
            diff["chart"] = {"from": current_chart, "to": target_chart}
        if current.status != ReleaseStatus.DEPLOYED:
            diff["status"] = {"from": current.status.value, "to": ReleaseStatus.DEPLOYED.value}
        if not diff:
            return report_changes(self.log, [Change(self.resource, Action.UNCHANGED, dry_run=self.is_dry_run)],
                                  **current.facts(), rolled_back_to=revision)
        change = Change(self.resource, Action.UPDATED, redact_data(diff), dry_run=self.is_dry_run)
        if self.is_dry_run:
            return report_changes(self.log, [change], **current.facts(), rolled_back_to=revision)
        release = hook.rollback(self.release_name, self.namespace, revision, timeout=self.timeout)
        return report_changes(self.log, [change], **release.facts(), rolled_back_to=revision)


class HelmUninstallOperator(_HelmReleaseOperator):
    """Uninstall a Helm release; ``absent`` when it is not installed.

    Returns ``{"changes": [...], "release", "namespace"}``.

    Usage in a custom Dag::

        HelmUninstallOperator(
            task_id="uninstall_agents", eks_cluster_name="prod-agents", region_name="eu-west-1",
            release_name="astro-agent", namespace="astro-agents",
        )
    """

    template_fields: Sequence[str] = RELEASE_TEMPLATE_FIELDS

    def execute(self, context: Any) -> dict[str, Any]:
        hook = self.hook
        facts = {"release": self.release_name, "namespace": self.namespace}
        current = hook.get_release(self.release_name, self.namespace)
        if current is None:
            return report_changes(self.log, [Change(self.resource, Action.ABSENT, dry_run=self.is_dry_run)], **facts)
        change = Change(self.resource, Action.DELETED, {"revision": {"from": current.revision, "to": None}},
                        dry_run=self.is_dry_run)
        if not self.is_dry_run:
            hook.uninstall(self.release_name, self.namespace, timeout=self.timeout)
        return report_changes(self.log, [change], **facts)
