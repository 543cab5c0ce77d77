"""Operators for the Kubernetes objects created beside the agent chart (reference 3.6, 4.2, 4.5).

The namespace, Secrets whose values come from Airflow Connections at run time, and the pip
constraints ConfigMap; plus teardown operators that delete only objects carrying our ownership
labels. Each reads the object, compares it with the desired one and writes only on a difference
(one create, or one replace guarded by ``resourceVersion``), so a converged re-run writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from remote_agents.changes import Action, Change, diff_values
from remote_agents.errors import ClusterError, ConfigError
from remote_agents.hooks.kubernetes import ClusterObjects, KubernetesApiError, object_ref
from remote_agents.naming import CONSTRAINTS_CONFIG_KEY, OWNER_LABEL, OWNER_VALUE, environment_ownership_labels
from remote_agents.operators.base import CLUSTER_TEMPLATE_FIELDS, ClusterOperator, report_changes
from remote_agents.render.manifests import AGENT_TOKEN_KEY, DOCKERCONFIGJSON_KEY, REGISTRY_USER, build_dockerconfigjson
from remote_agents.render.values import STATIC_CREDENTIAL_KEYS

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
DEFAULT_REGISTRY = "images.astronomer.cloud"
SECRET_TYPES = {"generic": "Opaque", "dockerconfigjson": "kubernetes.io/dockerconfigjson"}
AWS_CREDENTIALS = "aws-credentials"
CONNECTION_FIELDS = ("password", "login")  # or "extra.<key>"


# -- desired objects ------------------------------------------------------------------------------


def secret_manifest(
    name: str,
    namespace: str,
    values: Mapping[str, str],
    *,
    secret_type: str = "Opaque",
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret with ``data`` already base64-encoded, so it compares field by field with what the API returns."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    for encoded in data.values():
        mask_secret(encoded)  # the base64 spelling, in case a response or error ever echoes it
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret_type, "data": data}


def secret_values(secret_type: str, value: str, *, key: str = AGENT_TOKEN_KEY, registry: str = DEFAULT_REGISTRY,
                  registry_username: str = REGISTRY_USER) -> tuple[str, dict[str, str]]:
    """The Kubernetes Secret type and its values for one secret ``value`` (a token, a password)."""
    if secret_type == "generic":
        return SECRET_TYPES[secret_type], {key: value}
    if secret_type == "dockerconfigjson":
        # `auth` is base64 of user:token, a second spelling of the secret the masker would not recognise
        mask_secret(base64.b64encode(f"{registry_username}:{value}".encode()).decode())
        payload = build_dockerconfigjson(registry, registry_username, value)
        return SECRET_TYPES[secret_type], {DOCKERCONFIGJSON_KEY: payload}
    raise ConfigError([f"secret_type: {secret_type!r} is not one of {sorted(SECRET_TYPES)}"], source="secret_type")


def aws_credentials_values(conn_id: str) -> dict[str, str]:
    """On-prem agents' AWS keys (the `aws-credentials` type): the login and password of an aws Connection."""
    return dict(zip(STATIC_CREDENTIAL_KEYS, (connection_value(conn_id, "login"), connection_value(conn_id, "password"))))


# -- converging -----------------------------------------------------------------------------------


def is_owned(obj: Mapping[str, Any], ownership: Mapping[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in ownership.items())


def require_owned(obj: Mapping[str, Any], ownership: Mapping[str, str]) -> None:
    """Refuse to change an object someone else made (e.g. by hand, following the tutorial)."""
    if is_owned(obj, ownership):
        return
    meta = obj["metadata"]
    selector = ",".join(f"{key}={value}" for key, value in ownership.items())
    owner = (meta.get("labels") or {}).get(OWNER_LABEL)
    whose = "another remote-agents environment" if owner == OWNER_VALUE else "someone else (no ownership labels)"
    raise ClusterError(
        f"{object_ref(obj['kind'], meta['name'], meta.get('namespace'))} exists but belongs to {whose}; "
        f"delete it to let remote-agents create it, or label it {selector} to hand it over"
    )


def _fingerprint(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]} ({len(text.encode())} bytes)"


def _comparable(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields we converge; ConfigMap values as fingerprints so a diff stays short."""
    if not obj:
        # every key present, so diff_values descends into each and redacts secret values one by one
        return {"labels": {}, "annotations": {}, "data": {}}
    meta = obj.get("metadata", {})
    data = dict(obj.get("data") or {})
    if obj.get("kind") == "ConfigMap":
        data = {key: _fingerprint(value) for key, value in data.items()}
    return {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}, "data": data}


def _diff(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    keys = set((current or {}).get("data") or {}) | set(desired.get("data") or {})
    secret_paths = frozenset(f"data.{key}" for key in keys) if desired["kind"] == "Secret" else frozenset()
    return diff_values(_comparable(current), _comparable(desired), secret_paths)


def converge_object(
    objects: ClusterObjects,
    desired: dict[str, Any],
    ownership: Mapping[str, str],
    *,
    dry_run: bool,
    current: dict[str, Any] | None = None,
) -> Change:
    """Create ``desired``, or replace what exists when its labels, annotations or data differ.

    Labels and annotations others added are kept. Pass ``current`` when it was just read. A dry run
    sends the write with ``dryRun=All``, so the server still validates the plan.
    """
    kind, meta = desired["kind"], desired["metadata"]
    resource = object_ref(kind, meta["name"], meta.get("namespace"))
    if current is None:
        current = objects.get(kind, meta["name"], meta.get("namespace"))
    if current is None:
        try:
            objects.create(desired, dry_run=dry_run)
        except KubernetesApiError as error:
            # A plan made before the namespace exists: the server cannot validate it yet, the plan stands.
            if not (dry_run and error.status == 404):
                raise
        return Change(resource, Action.CREATED, _diff(None, desired), dry_run)
    require_owned(current, ownership)
    if kind == "Secret" and current.get("type", "Opaque") != desired["type"]:
        raise ClusterError(
            f"{resource} has type {current.get('type')}, not {desired['type']}, and a Secret's type cannot "
            "change; delete the Secret and re-run"
        )
    current_meta = current["metadata"]
    updated = {
        **current,
        "metadata": {
            **current_meta,
            "labels": {**(current_meta.get("labels") or {}), **(meta.get("labels") or {})},
            "annotations": {**(current_meta.get("annotations") or {}), **(meta.get("annotations") or {})},
        },
        "data": desired.get("data") or {},
    }
    diff = _diff(current, updated)
    if not diff:
        return Change(resource, Action.UNCHANGED, dry_run=dry_run)
    objects.replace(updated, dry_run=dry_run)
    return Change(resource, Action.UPDATED, diff, dry_run)


def delete_owned(
    objects: ClusterObjects,
    kind: str,
    name: str,
    namespace: str | None,
    ownership: Mapping[str, str],
    *,
    dry_run: bool,
    log: Any,
) -> Change:
    """Delete the object only if it carries our ownership labels; an object already gone is ``absent``."""
    resource = object_ref(kind, name, namespace)
    current = objects.get(kind, name, namespace)
    if current is None:
        return Change(resource, Action.ABSENT, dry_run=dry_run)
    if not is_owned(current, ownership):
        log.warning("%s was not created by remote-agents for this environment; leaving it in place", resource)
        return Change(resource, Action.UNCHANGED, dry_run=dry_run)
    deleted = objects.delete(kind, name, namespace, dry_run=dry_run)
    return Change(resource, Action.DELETED if deleted else Action.ABSENT, dry_run=dry_run)


def restart_targets(objects: ClusterObjects, namespace: str, *, selector: str | None,
                    names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The Deployments matching ``selector``, plus those of ``names`` that exist, by name."""
    targets = {d["metadata"]["name"]: d for d in objects.list("Deployment", namespace, selector)} if selector else {}
    for name in names:
        if name not in targets and (found := objects.get("Deployment", name, namespace)) is not None:
            targets[name] = found
    return targets


def restart_deployments(
    objects: ClusterObjects,
    namespace: str,
    *,
    selector: str | None = None,
    names: Iterable[str] = (),
    dry_run: bool,
) -> list[Change]:
    """Roll Deployments as ``kubectl rollout restart`` does: bump their pod template's restartedAt annotation.

    Pods read Secrets at start, so this is how running agents pick up a new token. Deployments are
    the ones matching ``selector`` plus those named; a named one that does not exist is reported absent.
    """
    targets = restart_targets(objects, namespace, selector=selector, names=names)
    changes = [Change(object_ref("Deployment", name, namespace), Action.ABSENT, dry_run=dry_run)
               for name in names if name not in targets]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now}}}}}
    for name, deployment in sorted(targets.items()):
        template_annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
        objects.patch("Deployment", name, namespace, patch, dry_run=dry_run)
        diff = {f"spec.template.metadata.annotations.{RESTARTED_AT_ANNOTATION}":
                {"from": template_annotations.get(RESTARTED_AT_ANNOTATION), "to": now}}
        changes.append(Change(object_ref("Deployment", name, namespace), Action.UPDATED, diff, dry_run))
    return changes


def connection_value(conn_id: str, field: str) -> str:
    """A secret read from an Airflow Connection at run time, masked before it goes anywhere."""
    if field not in CONNECTION_FIELDS and not (field.startswith("extra.") and len(field) > len("extra.")):
        raise ConfigError(
            [f"source_field: {field!r} is not one of 'password', 'login' or 'extra.<key>'"],
            source=f"connection {conn_id}",
        )
    conn = BaseHook.get_connection(conn_id)
    value = getattr(conn, field) if field in CONNECTION_FIELDS else conn.extra_dejson.get(field.removeprefix("extra."))
    if not value:
        raise ConfigError([f"{field}: connection {conn_id!r} has no value there; set it"],
                          source=f"connection {conn_id}")
    value = str(value)
    mask_secret(value)
    return value


# -- operators ------------------------------------------------------------------------------------


class _KubernetesObjectOperator(ClusterOperator):
    """Shared parameters: the namespace and the environment whose ownership labels mark our objects.

    :param namespace: the namespace of the object (for the namespace operators: the namespace itself)
    :param environment: the environment's name; the objects we create carry its ownership labels, and
        an object without them is never changed or deleted
    """

    template_fields: Sequence[str] = (*CLUSTER_TEMPLATE_FIELDS, "namespace", "environment")

    def __init__(self, *, namespace: str, environment: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.namespace = namespace
        self.environment = environment

    @property
    def ownership(self) -> dict[str, str]:
        return environment_ownership_labels(self.environment)

    def objects(self) -> ClusterObjects:
        return ClusterObjects(self.cluster_access)


class _EnsureLabelledObjectOperator(_KubernetesObjectOperator):
    """An object created with the ownership labels and any others asked for.

    :param labels: extra labels for the object; the ownership labels win over any of the same key
    """

    template_fields: Sequence[str] = (*_KubernetesObjectOperator.template_fields, "labels")

    def __init__(self, *, labels: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = labels

    @property
    def desired_labels(self) -> dict[str, str]:
        # Ownership last, so an extra label cannot change who owns the object.
        return {**(self.labels or {}), **self.ownership}


class EnsureNamespaceOperator(_EnsureLabelledObjectOperator):
    """Create the agents' namespace, labelled as ours; a namespace that already exists is left as it is.

    A namespace someone else made (the platform team, on-prem) is used but never relabelled, so
    teardown (``DeleteNamespaceOperator``) will not delete it.

    Example::

        EnsureNamespaceOperator(
            task_id="namespace", namespace="astro-agents", environment="prod",
            eks_cluster_name="agents-prod", aws_conn_id="aws_default", region_name="eu-west-1",
        )

    Returns ``{"changes": [...], "namespace": ..., "managed": bool}``.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        objects = self.objects()
        desired = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": self.namespace, "labels": self.desired_labels}}
        resource = object_ref("Namespace", self.namespace)
        current = objects.get("Namespace", self.namespace)
        managed = True
        if current is None:
            objects.create(desired, dry_run=self.is_dry_run)
            change = Change(resource, Action.CREATED, diff_values({"labels": {}}, {"labels": self.desired_labels}),
                            self.is_dry_run)
        elif not is_owned(current, self.ownership):
            managed = False
            self.log.info("Namespace %s exists and was not created by remote-agents; using it as it is", self.namespace)
            change = Change(resource, Action.UNCHANGED, dry_run=self.is_dry_run)
        else:
            labels = current["metadata"].get("labels") or {}
            missing = {key: value for key, value in self.desired_labels.items() if labels.get(key) != value}
            if missing:
                objects.patch("Namespace", self.namespace, None, {"metadata": {"labels": missing}},
                              dry_run=self.is_dry_run)
            change = Change(resource, Action.UPDATED if missing else Action.UNCHANGED,
                            diff_values({"labels": labels}, {"labels": {**labels, **missing}}), self.is_dry_run)
        return report_changes(self.log, [change], namespace=self.namespace, managed=managed)


class EnsureSecretOperator(_EnsureLabelledObjectOperator):
    """Converge a Secret whose value is read from an Airflow Connection when the task runs.

    The value never passes through a template, XCom or log: it is read from ``source_conn_id``
    (``source_field`` = ``password``, ``login`` or ``extra.<key>``), masked, and written to the Secret.
    ``secret_type="generic"`` stores it under ``secret_key``; ``"dockerconfigjson"`` builds an image
    pull Secret for ``registry`` (user ``registry_username``), as ``kubectl create secret docker-registry``;
    ``"aws-credentials"`` stores an aws Connection's login and password as ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (on-prem agents without IRSA; ``source_field`` is not used).

    Example (an image pull Secret from a Connection holding a Deployment API token)::

        EnsureSecretOperator(
            task_id="registry_secret", namespace="astro-agents", environment="prod",
            secret_name="astro-registry", secret_type="dockerconfigjson",
            source_conn_id="astro_registry", source_field="password", kubernetes_conn_id="kubernetes_default",
        )

    Returns ``{"changes": [...], "secret_name": ...}``; values in the diff are redacted.

    :param secret_name: the Secret
    :param source_conn_id: the Airflow Connection the value is read from
    :param source_field: where in that Connection: ``password``, ``login`` or ``extra.<key>``
    :param secret_key: the key of the value in a ``generic`` Secret
    :param secret_type: ``generic`` (an Opaque Secret), ``dockerconfigjson`` (an image pull Secret) or
        ``aws-credentials``
    :param registry: the registry host of a ``dockerconfigjson`` Secret
    :param registry_username: the registry user of a ``dockerconfigjson`` Secret (Astro's registry takes
        ``cli`` with any Deployment API token)
    """

    template_fields: Sequence[str] = (
        *_EnsureLabelledObjectOperator.template_fields, "secret_name", "source_conn_id", "source_field",
        "secret_key", "secret_type", "registry", "registry_username",
    )

    def __init__(
        self,
        *,
        secret_name: str,
        source_conn_id: str,
        source_field: str = "password",
        secret_key: str = AGENT_TOKEN_KEY,
        secret_type: str = "generic",
        registry: str = DEFAULT_REGISTRY,
        registry_username: str = REGISTRY_USER,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.secret_name = secret_name
        self.source_conn_id = source_conn_id
        self.source_field = source_field
        self.secret_key = secret_key
        self.secret_type = secret_type
        self.registry = registry
        self.registry_username = registry_username

    def execute(self, context: Any) -> dict[str, Any]:
        if self.secret_type == AWS_CREDENTIALS:
            kube_type, values = "Opaque", aws_credentials_values(self.source_conn_id)
        else:
            value = connection_value(self.source_conn_id, self.source_field)
            kube_type, values = secret_values(self.secret_type, value, key=self.secret_key, registry=self.registry,
                                              registry_username=self.registry_username)
        desired = secret_manifest(self.secret_name, self.namespace, values, secret_type=kube_type,
                                  labels=self.desired_labels)
        change = converge_object(self.objects(), desired, self.ownership, dry_run=self.is_dry_run)
        return report_changes(self.log, [change], secret_name=self.secret_name)


class EnsureConfigMapOperator(_EnsureLabelledObjectOperator):
    """Converge a ConfigMap holding one file, e.g. the agent image's pip constraints (reference 4.5).

    The file at ``source_path`` is read when the task runs and stored under ``data_key``; a changed
    file updates the ConfigMap, an equal one writes nothing. Diffs show sha256 fingerprints, not text.

    Example::

        EnsureConfigMapOperator(
            task_id="constraints", namespace="astro-agents", environment="prod",
            configmap_name="agents-pip-constraints", source_path="/usr/local/airflow/include/agent-constraints.txt",
            kubernetes_conn_id="kubernetes_default",
        )

    Returns ``{"changes": [...], "configmap_name": ..., "sha256": ...}``.

    :param configmap_name: the ConfigMap
    :param source_path: the file to store, a path on the worker, read when the task runs
    :param data_key: the ConfigMap key holding the file's text
    """

    template_fields: Sequence[str] = (
        *_EnsureLabelledObjectOperator.template_fields, "configmap_name", "source_path", "data_key",
    )

    def __init__(self, *, configmap_name: str, source_path: str, data_key: str = CONSTRAINTS_CONFIG_KEY,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.configmap_name = configmap_name
        self.source_path = source_path
        self.data_key = data_key

    def execute(self, context: Any) -> dict[str, Any]:
        path = Path(self.source_path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(
                [f"source_path: cannot read {str(path)!r} ({error.strerror}); give the path of the file, "
                 "e.g. include/agent-constraints.txt regenerated for the agent image"],
                source=self.task_id,
            ) from None
        desired = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.configmap_name, "namespace": self.namespace, "labels": self.desired_labels},
            "data": {self.data_key: text},
        }
        change = converge_object(self.objects(), desired, self.ownership, dry_run=self.is_dry_run)
        return report_changes(self.log, [change], configmap_name=self.configmap_name,
                              sha256=hashlib.sha256(text.encode()).hexdigest())


class _DeleteOwnedObjectOperator(_KubernetesObjectOperator):
    kind: ClassVar[str]

    def object_name(self) -> str:
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        namespace = None if self.kind == "Namespace" else self.namespace
        change = delete_owned(self.objects(), self.kind, self.object_name(), namespace, self.ownership,
                              dry_run=self.is_dry_run, log=self.log)
        return report_changes(self.log, [change])


class DeleteNamespaceOperator(_DeleteOwnedObjectOperator):
    """Delete the agents' namespace (and so everything in it) only if remote-agents created it.

    Run token revocation first: the Secrets holding token ids go with the namespace.

    Example::

        DeleteNamespaceOperator(task_id="delete_namespace", namespace="astro-agents", environment="prod",
                                kubernetes_conn_id="kubernetes_default")
    """

    kind = "Namespace"

    def object_name(self) -> str:
        return self.namespace


class DeleteSecretOperator(_DeleteOwnedObjectOperator):
    """Delete a Secret we created (ownership labels); one already gone is reported ``absent``.

    Example::

        DeleteSecretOperator(task_id="delete_registry_secret", namespace="astro-agents", environment="prod",
                             secret_name="astro-registry", kubernetes_conn_id="kubernetes_default")

    :param secret_name: the Secret to delete
    """

    kind = "Secret"
    template_fields: Sequence[str] = (*_KubernetesObjectOperator.template_fields, "secret_name")

    def __init__(self, *, secret_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret_name = secret_name

    def object_name(self) -> str:
        return self.secret_name


class DeleteConfigMapOperator(_DeleteOwnedObjectOperator):
    """Delete a ConfigMap we created (ownership labels); one already gone is reported ``absent``.

    Example::

        DeleteConfigMapOperator(task_id="delete_constraints", namespace="astro-agents", environment="prod",
                                configmap_name="agents-pip-constraints", kubernetes_conn_id="kubernetes_default")

    :param configmap_name: the ConfigMap to delete
    """

    kind = "ConfigMap"
    template_fields: Sequence[str] = (*_KubernetesObjectOperator.template_fields, "configmap_name")

    def __init__(self, *, configmap_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.configmap_name = configmap_name

    def object_name(self) -> str:
        return self.configmap_name
