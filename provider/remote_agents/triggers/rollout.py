"""``RolloutTrigger``: wait, in the triggerer, until a release's Deployments have rolled out.

A Deployment is rolled out when the controller has seen its latest spec (``observedGeneration``)
and every desired replica is updated, ready and no old replica is left. On the deadline the trigger
reads the Pods of each unready Deployment and says why: a container waiting in ``ImagePullBackOff``
or ``CrashLoopBackOff``, a Pod the scheduler cannot place, and so on.

The Kubernetes calls are the sync client of the cncf ``KubernetesHook`` run in ``asyncio.to_thread``:
``hooks.cluster.kubernetes_hook`` is the one place that knows how to reach an EKS cluster (describe
the cluster, sign a token) or a Kubernetes connection, and its EKS half is boto3 (sync) anyway. A
poll is a few short GETs every few seconds, so a worker thread per poll costs the triggerer little.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_agents.errors import RemoteAgentsError
from remote_agents.hooks.cluster import ClusterAccess, kubernetes_hook

if TYPE_CHECKING:
    from kubernetes.client import AppsV1Api, CoreV1Api

# The kubernetes client is imported in run() and the poller, not here: the operators that defer to
# this trigger are imported by Dag files, which should not pay for the client at every parse.

# EKS tokens live 15 minutes; rebuild the client well before that.
CLIENT_MAX_AGE_SECONDS = 600
TRANSIENT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
HINTS = {
    "ImagePullBackOff": "check the image name and tag, and the image pull Secret (imagePullSecretName)",
    "ErrImagePull": "check the image name and tag, and the image pull Secret (imagePullSecretName)",
    "CrashLoopBackOff": "the container keeps exiting; read its logs (kubectl logs --previous)",
    "CreateContainerConfigError": "a Secret or ConfigMap the Pod references is missing (e.g. agentTokenSecretName)",
    "Unschedulable": "no node fits the Pod; add nodes or lower the resource requests",
}


def deployment_ready(deployment: dict[str, Any]) -> bool:
    """True when the latest spec is fully rolled out: observed, all replicas updated and ready, no old ones."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 1)
        and status.get("updatedReplicas", 0) >= desired
        and status.get("readyReplicas", 0) >= desired
        and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
    )


def pod_problems(pod: dict[str, Any]) -> list[str]:
    """Why one Pod is not ready, from its conditions and container statuses."""
    status = pod.get("status") or {}
    problems = []
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            problems.append(f"{cond.get('reason') or 'Unschedulable'}: {cond.get('message', '')}".rstrip(": "))
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in containers:
        state = container.get("state") or {}
        if "waiting" in state:
            waiting = state["waiting"]
            detail = f" ({waiting['message']})" if waiting.get("message") else ""
            problems.append(f"container {container.get('name')}: {waiting.get('reason', 'Waiting')}{detail}")
        elif "terminated" in state and state["terminated"].get("exitCode", 0) != 0:
            terminated = state["terminated"]
            problems.append(
                f"container {container.get('name')}: {terminated.get('reason', 'Error')} "
                f"(exit code {terminated.get('exitCode')})"
            )
    if not problems and status.get("phase") == "Pending":
        problems.append("Pending")
    return problems


def diagnose(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """One line naming why a Deployment is not rolled out, with the likely fix."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    counts = f"{status.get('readyReplicas', 0)}/{desired} ready, {status.get('updatedReplicas', 0)} updated"
    problems: dict[str, int] = {}
    for pod in pods:
        for problem in pod_problems(pod):
            problems[problem] = problems.get(problem, 0) + 1
    if not pods:
        return f"{counts}; no Pods exist (check the ReplicaSet events and quotas)"
    if not problems:
        return f"{counts}; Pods exist but are not ready yet (readiness probe failing or still starting)"
    described = "; ".join(f"{text} [{n} Pod{'s' if n > 1 else ''}]" for text, n in problems.items())
    hints = [hint for reason, hint in HINTS.items() if any(reason in text for text in problems)]
    return f"{counts}; {described}" + (f" -> {'; '.join(hints)}" if hints else "")


class RolloutTrigger(BaseTrigger):
    """Polls ``deployments`` in ``namespace`` until all are rolled out, or ``deadline`` (epoch seconds) passes.

    Yields one event: ``{"status": "success", "ready": [...]}``, ``{"status": "failed", "unready":
    {name: diagnosis}, "message": ...}`` at the deadline, or ``{"status": "error", "message": ...}``
    when the Deployments cannot be read at all (credentials, RBAC). ``return_value`` (primitives only)
    is echoed in the event, so the resumed operator gets its facts back even where
    ``defer(kwargs=...)`` is dropped (dag.test).
    """

    def __init__(
        self,
        access: dict[str, Any],
        namespace: str,
        deployments: list[str],
        deadline: float,
        poll_interval: float = 5.0,
        return_value: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.access = access
        self.namespace = namespace
        self.deployments = list(deployments)
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.return_value = return_value or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "access": self.access,
                "namespace": self.namespace,
                "deployments": self.deployments,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "return_value": self.return_value,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        poller = _Poller(ClusterAccess(**self.access), self.namespace)
        pending = list(self.deployments)
        last_error = ""
        while True:
            try:
                pending = await asyncio.to_thread(poller.unready, pending)
                last_error = ""
            except (ApiException, HTTPError) as error:
                status = getattr(error, "status", None)
                if status is not None and status not in TRANSIENT_STATUS_CODES:
                    # Not a rollout failure: we cannot see the Deployments, so nothing is known about them.
                    yield TriggerEvent({
                        "status": "error", "namespace": self.namespace, "return_value": self.return_value,
                        "message": f"reading Deployments in {self.namespace} failed: HTTP {status} "
                                   f"{getattr(error, 'reason', '')}; check the cluster credentials and RBAC",
                    })
                    return
                last_error = f"last poll failed: {type(error).__name__} {status or ''}".strip()
                self.log.warning("Rollout poll failed (%s); retrying", last_error)
            except RemoteAgentsError as error:  # e.g. the EKS cluster is no longer ACTIVE
                yield TriggerEvent({"status": "error", "namespace": self.namespace, "message": str(error),
                                    "return_value": self.return_value})
                return
            if not pending:
                yield TriggerEvent({"status": "success", "namespace": self.namespace, "ready": self.deployments,
                                    "return_value": self.return_value})
                return
            remaining = self.deadline - time.time()
            if remaining <= 0:
                try:
                    unready = await asyncio.to_thread(poller.diagnose, pending)
                except (ApiException, HTTPError):
                    unready = dict.fromkeys(pending, last_error or "not ready (diagnosis could not be read)")
                yield self._failed(unready, "rollout timed out")
                return
            self.log.info("Waiting for %d Deployment(s) in %s: %s", len(pending), self.namespace, ", ".join(pending))
            await asyncio.sleep(min(self.poll_interval, remaining))

    def _failed(self, unready: dict[str, str], message: str) -> TriggerEvent:
        return TriggerEvent({"status": "failed", "namespace": self.namespace, "unready": unready,
                             "message": message, "return_value": self.return_value})


class _Poller:
    """Sync reads for one poll; the clients are rebuilt before an EKS token could expire."""

    def __init__(self, access: ClusterAccess, namespace: str) -> None:
        self.access = access
        self.namespace = namespace
        self._built_at = 0.0
        self._apps: AppsV1Api | None = None
        self._core: CoreV1Api | None = None

    def _clients(self) -> tuple[AppsV1Api, CoreV1Api]:
        if self._apps is None or self._core is None or time.time() - self._built_at > CLIENT_MAX_AGE_SECONDS:
            hook = kubernetes_hook(self.access)
            self._apps, self._core = hook.apps_v1_client, hook.core_v1_client
            self._built_at = time.time()
        return self._apps, self._core

    def _deployment(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        apps, _ = self._clients()
        try:
            response = apps.read_namespaced_deployment(name, self.namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data)

    def unready(self, names: list[str]) -> list[str]:
        return [name for name in names if not deployment_ready(self._deployment(name) or {})]

    def diagnose(self, names: list[str]) -> dict[str, str]:
        _, core = self._clients()
        result = {}
        for name in names:
            deployment = self._deployment(name)
            if deployment is None:
                result[name] = "Deployment not found"
                continue
            labels = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
            response = core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False)
            result[name] = diagnose(deployment, json.loads(response.data).get("items", []))
        return result
