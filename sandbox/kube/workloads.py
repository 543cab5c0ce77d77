"""A lazy stand-in for the Deployment, ReplicaSet, StatefulSet, Job and kubelet controllers.

`reconcile()` runs under the store lock before every request (and on every watch tick), so no
background thread is needed. For every workload whose spec (generation) changed, it creates the
child ReplicaSet/Pods; it then sets each Pod's status from its age (`ready_delay`) and the injected
faults, and rolls the Pods' readiness up into the owners' `status`. Status writes bump the
resourceVersion like real controller writes do, so watches see them.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import random
import time
import uuid
from typing import Any

from sandbox.kube.faults import Faults
from sandbox.kube.kinds import Kind, find_kind
from sandbox.kube.store import NAME_SUFFIX_ALPHABET, Store

POD, REPLICA_SET = find_kind("Pod"), find_kind("ReplicaSet")
DEPLOYMENT, STATEFUL_SET, JOB = find_kind("Deployment"), find_kind("StatefulSet"), find_kind("Job")


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(NAME_SUFFIX_ALPHABET[int(c, 16) % len(NAME_SUFFIX_ALPHABET)] for c in digest[:10])


def owner_reference(kind: Kind, owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] for ref in obj["metadata"].get("ownerReferences", []))


def condition(kind: str, status: bool, when: str, reason: str = "", message: str = "") -> dict[str, Any]:
    entry = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": when}
    if reason:
        entry.update(reason=reason, message=message)
    return entry


class WorkloadController:
    def __init__(self, store: Store, faults: Faults, ready_delay: float) -> None:
        self.store, self.faults, self.ready_delay = store, faults, ready_delay
        self.observed: dict[str, int] = {}  # workload uid -> generation its children were built for
        self.born: dict[str, float] = {}  # pod uid -> wall-clock creation time

    def reset(self) -> None:
        self.observed.clear()
        self.born.clear()

    def reconcile(self) -> None:
        for deployment in list(self.store.items(DEPLOYMENT)):
            self.sync_deployment(deployment)
        for stateful_set in list(self.store.items(STATEFUL_SET)):
            self.sync_stateful_set(stateful_set)
        for job in list(self.store.items(JOB)):
            self.sync_job(job)
        pods = list(self.store.items(POD))
        live = {pod["metadata"]["uid"] for pod in pods}
        self.born = {uid: born for uid, born in self.born.items() if uid in live}
        for pod in pods:
            self.set_status(POD, pod, self.pod_status(pod))
        for replica_set in list(self.store.items(REPLICA_SET)):
            self.set_status(REPLICA_SET, replica_set, self.replica_set_status(replica_set))
        for deployment in list(self.store.items(DEPLOYMENT)):
            self.set_status(DEPLOYMENT, deployment, self.deployment_status(deployment))
        for stateful_set in list(self.store.items(STATEFUL_SET)):
            self.set_status(STATEFUL_SET, stateful_set, self.stateful_set_status(stateful_set))
        for job in list(self.store.items(JOB)):
            self.set_status(JOB, job, self.job_status(job))

    # --- children ----------------------------------------------------------------------------
    def needs_sync(self, workload: dict[str, Any]) -> bool:
        meta = workload["metadata"]
        return self.observed.get(meta["uid"]) != meta.get("generation", 1)

    def sync_deployment(self, deployment: dict[str, Any]) -> None:
        if not self.needs_sync(deployment):
            return
        self.observed[deployment["metadata"]["uid"]] = deployment["metadata"].get("generation", 1)
        spec, namespace = deployment["spec"], deployment["metadata"]["namespace"]
        pod_hash = template_hash(spec["template"])
        name = f"{deployment['metadata']['name']}-{pod_hash}"
        for old in list(self.store.items(REPLICA_SET, namespace)):
            if owned_by(old, deployment) and old["metadata"]["name"] != name:
                self.store.remove(REPLICA_SET, old)  # old pods go with it (no surge in the sandbox)
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        replica_set = self.store.find(REPLICA_SET, namespace, name) or {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                         "creationTimestamp": iso(time.time()), "generation": 1,
                         "labels": template["metadata"]["labels"],
                         "ownerReferences": [owner_reference(DEPLOYMENT, deployment)]},
        }
        replica_set["spec"] = {"replicas": spec.get("replicas", 1), "selector": selector, "template": template}
        self.store.save(REPLICA_SET, replica_set)
        self.scale_pods(replica_set, REPLICA_SET, template, spec.get("replicas", 1))

    def sync_stateful_set(self, stateful_set: dict[str, Any]) -> None:
        if not self.needs_sync(stateful_set):
            return
        self.observed[stateful_set["metadata"]["uid"]] = stateful_set["metadata"].get("generation", 1)
        template = copy.deepcopy(stateful_set["spec"]["template"])
        revision = f"{stateful_set['metadata']['name']}-{template_hash(template)}"
        template.setdefault("metadata", {}).setdefault("labels", {})["controller-revision-hash"] = revision
        self.delete_pods_owned_by(stateful_set)
        for ordinal in range(stateful_set["spec"].get("replicas", 1)):
            name = f"{stateful_set['metadata']['name']}-{ordinal}"
            self.create_pod(stateful_set, STATEFUL_SET, template, name,
                            {"statefulset.kubernetes.io/pod-name": name})

    def sync_job(self, job: dict[str, Any]) -> None:
        if self.needs_sync(job):
            self.observed[job["metadata"]["uid"]] = job["metadata"].get("generation", 1)
            job_name = job["metadata"]["name"]
            if not any(owned_by(p, job) for p in self.store.items(POD, job["metadata"]["namespace"])):
                self.create_pod(job, JOB, job["spec"]["template"], None,
                                {"job-name": job_name, "batch.kubernetes.io/job-name": job_name})

    def scale_pods(self, owner: dict[str, Any], owner_kind: Kind, template: dict[str, Any], replicas: int) -> None:
        pods = [p for p in self.store.items(POD, owner["metadata"]["namespace"]) if owned_by(p, owner)]
        for pod in pods[replicas:]:
            self.store.remove(POD, pod)
        for _ in range(replicas - len(pods)):
            self.create_pod(owner, owner_kind, template, None, {})

    def delete_pods_owned_by(self, owner: dict[str, Any]) -> None:
        for pod in list(self.store.items(POD, owner["metadata"]["namespace"])):
            if owned_by(pod, owner):
                self.store.remove(POD, pod)

    def create_pod(self, owner: dict[str, Any], owner_kind: Kind, template: dict[str, Any], name: str | None,
                   extra_labels: dict[str, str]) -> None:
        meta = template.get("metadata", {})
        prefix = f"{owner['metadata']['name']}-"
        pod_meta = {
            "name": name or prefix + "".join(random.choices(NAME_SUFFIX_ALPHABET, k=5)),
            "generateName": prefix,
            "namespace": owner["metadata"]["namespace"],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": iso(time.time()),
            "labels": {**meta.get("labels", {}), **extra_labels},
            "ownerReferences": [owner_reference(owner_kind, owner)],
        }
        if meta.get("annotations"):
            pod_meta["annotations"] = dict(meta["annotations"])
        spec = {**copy.deepcopy(template.get("spec", {})), "nodeName": "sandbox-node"}
        self.born[pod_meta["uid"]] = time.time()
        self.store.save(POD, {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec})

    # --- status ------------------------------------------------------------------------------
    def set_status(self, kind: Kind, obj: dict[str, Any], status: dict[str, Any]) -> None:
        if obj.get("status") != status:
            obj["status"] = status
            self.store.save(kind, obj)

    def owner_name(self, pod: dict[str, Any]) -> str:
        """The workload a Pod belongs to: ReplicaSet Pods answer for their Deployment."""
        refs = pod["metadata"].get("ownerReferences", [])
        if not refs:
            return pod["metadata"]["name"]
        if refs[0]["kind"] == "ReplicaSet":
            replica_set = self.store.find(REPLICA_SET, pod["metadata"]["namespace"], refs[0]["name"])
            owners = (replica_set or {}).get("metadata", {}).get("ownerReferences", [])
            return owners[0]["name"] if owners else refs[0]["name"]
        return refs[0]["name"]

    def pod_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        meta, spec = pod["metadata"], pod.get("spec", {})
        born = self.born.setdefault(meta["uid"], time.time())
        containers = spec.get("containers", [])
        failure = self.faults.pod_failure(meta["namespace"], (self.owner_name(pod), meta["name"]),
                                          [c.get("image", "") for c in containers])
        started = time.time() >= born + self.ready_delay
        completes = spec.get("restartPolicy", "Always") != "Always"
        ready_at = iso(born + self.ready_delay)
        base = {"hostIP": "10.0.0.1", "podIP": "10.244.0.10", "podIPs": [{"ip": "10.244.0.10"}],
                "startTime": iso(born), "qosClass": "BestEffort"}
        if failure is None and started and completes:
            return {**base, "phase": "Succeeded",
                    "conditions": [condition("PodScheduled", True, iso(born)),
                                   condition("Ready", False, ready_at, "PodCompleted")],
                    "containerStatuses": [container_status(c, False, {"terminated": {
                        "exitCode": 0, "reason": "Completed", "startedAt": iso(born), "finishedAt": ready_at}})
                        for c in containers]}
        if failure is None and started:
            return {**base, "phase": "Running",
                    "conditions": [condition(t, True, ready_at) for t in
                                   ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]
                    + [condition("PodScheduled", True, iso(born))],
                    "containerStatuses": [container_status(c, True, {"running": {"startedAt": ready_at}})
                                          for c in containers]}
        reason = failure or "ContainerCreating"
        restarts = 3 if reason == "CrashLoopBackOff" else 0
        message = f"sandbox fault: {reason}" if failure else ""
        return {**base, "phase": "Running" if reason == "CrashLoopBackOff" else "Pending",
                "conditions": [condition("PodScheduled", True, iso(born)),
                               condition("Ready", False, iso(born), "ContainersNotReady",
                                         "containers with unready status")],
                "containerStatuses": [container_status(c, False, {"waiting": {"reason": reason, "message": message}},
                                                       restarts) for c in containers]}

    def pods_of(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in self.store.items(POD, owner["metadata"]["namespace"]) if owned_by(p, owner)]

    def replica_set_status(self, replica_set: dict[str, Any]) -> dict[str, Any]:
        pods = self.pods_of(replica_set)
        ready = sum(is_ready(p) for p in pods)
        return {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                "availableReplicas": ready, "observedGeneration": replica_set["metadata"].get("generation", 1)}

    def deployment_status(self, deployment: dict[str, Any]) -> dict[str, Any]:
        replicas = deployment["spec"].get("replicas", 1)
        children = [rs for rs in self.store.items(REPLICA_SET, deployment["metadata"]["namespace"])
                    if owned_by(rs, deployment)]
        pods = [p for rs in children for p in self.pods_of(rs)]
        ready = sum(is_ready(p) for p in pods)
        when = deployment["metadata"]["creationTimestamp"]
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods), "updatedReplicas": len(pods), "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                condition("Available", ready >= replicas, when,
                          "MinimumReplicasAvailable" if ready >= replicas else "MinimumReplicasUnavailable",
                          "Deployment has minimum availability." if ready >= replicas
                          else "Deployment does not have minimum availability."),
                condition("Progressing", True, when,
                          "NewReplicaSetAvailable" if ready >= replicas else "ReplicaSetUpdated",
                          f'ReplicaSet "{children[0]["metadata"]["name"]}" is progressing.' if children else ""),
            ],
        }
        if len(pods) > ready:
            status["unavailableReplicas"] = len(pods) - ready
        return {k: v for k, v in status.items() if v != 0}  # the API omits zero counts

    def stateful_set_status(self, stateful_set: dict[str, Any]) -> dict[str, Any]:
        pods = self.pods_of(stateful_set)
        ready = sum(is_ready(p) for p in pods)
        revision = f"{stateful_set['metadata']['name']}-{template_hash(stateful_set['spec']['template'])}"
        return {"observedGeneration": stateful_set["metadata"].get("generation", 1), "replicas": len(pods),
                "readyReplicas": ready, "currentReplicas": len(pods), "updatedReplicas": len(pods),
                "availableReplicas": ready, "currentRevision": revision, "updateRevision": revision,
                "collisionCount": 0}

    def job_status(self, job: dict[str, Any]) -> dict[str, Any]:
        pods = self.pods_of(job)
        start = job["metadata"]["creationTimestamp"]
        succeeded = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
        if pods and len(succeeded) == len(pods):
            finished = succeeded[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] \
                if succeeded[0]["status"].get("containerStatuses") else start
            return {"startTime": start, "completionTime": finished, "succeeded": len(pods), "ready": 0,
                    "terminating": 0,
                    "conditions": [condition("SuccessCriteriaMet", True, finished),
                                   condition("Complete", True, finished)]}
        return {"startTime": start, "active": len(pods), "ready": sum(is_ready(p) for p in pods), "terminating": 0}


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def container_status(container: dict[str, Any], ready: bool, state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
    return {"name": container.get("name", ""), "image": container.get("image", ""), "imageID": "",
            "ready": ready, "started": ready, "restartCount": restarts, "state": state}
