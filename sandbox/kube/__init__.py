"""A Kubernetes API emulator on loopback, for tests and the demo.

It speaks enough of the real REST protocol for the official `kubernetes` Python client, Airflow's
`KubernetesHook`, `kubectl` and `helm` 3 with default flags: /version, discovery, a minimal
/openapi/v3 (so clients leave field validation to the server), CRUD with real `Status` errors,
merge / strategic-merge / JSON patch, server-side apply, `?dryRun=All`, label and field selectors,
`?watch=true`, and protobuf request bodies for Secret and ConfigMap (helm's release storage).
Every written object is checked with kubernetes-validate (strict) and rejected with 422 naming the
field. Deployments, StatefulSets, Jobs and bare Pods become ready `ready_delay` seconds after each
spec change, with ReplicaSets and Pods created for them. Kinds live in one table (`kinds.KINDS`).

Python API::

    emulator = KubeEmulator(kubernetes_version="1.33", ready_delay=1.0)
    url = emulator.start(host="127.0.0.1", port=0)      # "http://127.0.0.1:<port>"
    emulator.write_kubeconfig(path, context="sandbox", namespace=None)  # plain http, mode 0600
    emulator.url; emulator.ready_delay = 0.5
    emulator.mutations -> list[Mutation]   # method, path, kind, namespace, name, field_manager,
                                           # user_agent, status, dry_run, time
    emulator.reset_counters()
    emulator.get_object("Deployment", "web", namespace="ns") -> dict | None   # kind, plural or short name
    emulator.list_objects("secrets", namespace=None, api_version=None, label_selector="") -> list[dict]
    emulator.faults.never_ready(namespace=None, name=None, image=None, reason="ImagePullBackOff")
        # reason: ImagePullBackOff | ErrImagePull | CrashLoopBackOff | CreateContainerConfigError;
        # `name` is the workload's (or bare Pod's) name, `image` a substring of a container image
    emulator.faults.fail_requests(path_pattern, times=1, status=503, method=None)  # re.search on the path
    emulator.faults.add_latency(seconds, path_pattern=".*")
    emulator.faults.clear()
    emulator.reset()        # empty store (built-in namespaces stay), mutation log and faults
    emulator.stop()

HTTP admin API (JSON; never recorded as mutations, never subject to faults)::

    GET    /sandbox/mutations                 -> {"count": n, "mutations": [...]}
    DELETE /sandbox/mutations                 reset the log
    GET    /sandbox/objects?kind=K[&namespace=ns][&apiVersion=g/v][&labelSelector=s] -> {"items": [...]}
    GET    /sandbox/faults                    DELETE /sandbox/faults  (clear all)
    POST   /sandbox/faults/never-ready        {"namespace", "name", "image", "reason"}
    POST   /sandbox/faults/fail-requests      {"path_pattern", "times", "status", "method"}
    POST   /sandbox/faults/latency            {"seconds", "path_pattern"}
    GET|PUT /sandbox/config                   {"ready_delay": seconds}
    POST   /sandbox/reset

Run standalone with `python -m sandbox.kube --port 0 --kubeconfig PATH`.
"""

from __future__ import annotations

from sandbox.kube.faults import Faults
from sandbox.kube.server import KubeEmulator, Mutation

__all__ = ["Faults", "KubeEmulator", "Mutation"]
