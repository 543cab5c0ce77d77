"""The object store and the API semantics of writes: metadata, validation, conflicts, patches, deletes.

Every method expects the caller to hold the emulator's lock. Errors are raised as `ApiError`
carrying the `Status` body a real API server would send.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import random
import re
import uuid
from collections.abc import Iterator
from typing import Any

import yaml

from sandbox.kube import patch as patches
from sandbox.kube import protobuf
from sandbox.kube import validation
from sandbox.kube.kinds import Kind, find_kind
from sandbox.kube.selectors import matches_fields, matches_labels

Key = tuple[Kind, str, str]  # (kind, namespace or "", name)

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's, which avoids vowels and lookalikes
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified_plural} "{name}" not found', details_for(kind, name))


def details_for(kind: Kind, name: str) -> dict[str, Any]:
    return {"name": name, "kind": kind.plural, **({"group": kind.group} if kind.group else {})}


def invalid(kind: Kind, name: str, field: str, reason: str, message: str) -> ApiError:
    return ApiError(
        422, "Invalid", f'{kind.qualified_kind} "{name}" is invalid: {field}: {message}',
        {"name": name, "kind": kind.kind, **({"group": kind.group} if kind.group else {}),
         "causes": [{"reason": reason, "message": message, "field": field}]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything but metadata/status/type: what `generation` tracks."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, kubernetes_version: str) -> None:
        self.kubernetes_version = kubernetes_version
        self.objects: dict[Key, dict[str, Any]] = {}
        self.revision = 0
        self.next_cluster_ip = 10
        self.reset()

    def reset(self) -> None:
        self.objects.clear()
        for name in BUILTIN_NAMESPACES:
            self.create(find_kind("Namespace"), "", {"metadata": {"name": name}})

    # --- reads -------------------------------------------------------------------------------
    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((kind, namespace if kind.namespaced else "", name))
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace if kind.namespaced else "", name))

    def items(self, kind: Kind, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored objects of a kind (live references, sorted like etcd keys); for internal readers."""
        for key in sorted(k for k in self.objects if k[0] == kind and namespace in (None, k[1])):
            yield self.objects[key]

    def list(self, kind: Kind, namespace: str | None, label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for obj in self.items(kind, namespace)
            if matches_labels(obj, label_selector) and matches_fields(obj, field_selector)
        ]

    def list_body(self, kind: Kind, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    # --- writes ------------------------------------------------------------------------------
    def create(self, kind: Kind, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        obj = self.normalize(kind, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(NAME_SUFFIX_ALPHABET, k=5))
        self.check_name(kind, meta.get("name", ""))
        self.require_namespace(kind, meta.get("namespace", ""))
        if self.find(kind, namespace, meta["name"]) is not None:
            raise ApiError(409, "AlreadyExists", f'{kind.qualified_plural} "{meta["name"]}" already exists',
                           details_for(kind, meta["name"]))
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(server_field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso())
        if "spec" in obj:
            meta["generation"] = 1
        if kind.has_status:
            obj.pop("status", None)
        self.default_fields(kind, obj)
        self.validate(kind, obj)
        if not dry_run:
            self.save(kind, obj)
        return copy.deepcopy(obj)

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any], dry_run: bool = False,
                subresource: str = "") -> dict[str, Any]:
        obj = self.normalize(kind, namespace, body)
        if obj["metadata"].get("name", name) != name:
            raise bad_request(f"the name of the object ({obj['metadata']['name']}) does not match the name on the URL ({name})")
        current = self.get(kind, namespace, name)
        self.check_resource_version(kind, name, current, obj["metadata"].get("resourceVersion"))
        return self.update(kind, current, obj, dry_run, subresource)

    def patch(self, kind: Kind, namespace: str, name: str, content_type: str, body: Any, dry_run: bool = False,
              field_manager: str = "", subresource: str = "") -> dict[str, Any]:
        if content_type == "application/apply-patch+yaml":
            return self.apply(kind, namespace, name, body, dry_run, field_manager)
        current = self.get(kind, namespace, name)
        try:
            if content_type == "application/json-patch+json":
                if not isinstance(body, list):
                    raise bad_request("json patch must be a list of operations")
                patched = patches.json_patch(current, body)
            elif content_type == "application/merge-patch+json":
                patched = patches.json_merge_patch(current, body)
            elif content_type == "application/strategic-merge-patch+json":
                patched = patches.strategic_merge_patch(current, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
        except patches.PatchError as error:
            raise ApiError(422, "Invalid", str(error)) from None
        if isinstance(body, dict):  # a resourceVersion in a patch is a precondition
            self.check_resource_version(kind, name, current, (body.get("metadata") or {}).get("resourceVersion"))
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(kind, current, self.normalize(kind, namespace, patched), dry_run, subresource)

    def apply(self, kind: Kind, namespace: str, name: str, body: Any, dry_run: bool, field_manager: str) -> dict[str, Any]:
        """Server-side apply, approximated: create, or strategic-merge the applied config into the live object."""
        if not field_manager:
            raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
        if not isinstance(body, dict):
            raise bad_request("apply patch must be an object")
        applied = self.normalize(kind, namespace, body)
        if applied["metadata"].get("name", name) != name:
            raise bad_request(f"the name of the object ({applied['metadata']['name']}) does not match the name on the URL ({name})")
        applied["metadata"]["name"] = name
        current = self.find(kind, namespace, name)
        if current is None:
            applied["metadata"]["managedFields"] = [managed_entry(kind, field_manager)]
            return self.create(kind, namespace, applied, dry_run)
        current = copy.deepcopy(current)
        self.check_resource_version(kind, name, current, applied["metadata"].get("resourceVersion"))
        merged = patches.strategic_merge_patch(current, applied)
        others = [m for m in current["metadata"].get("managedFields", []) if m.get("manager") != field_manager]
        merged["metadata"]["managedFields"] = [*others, managed_entry(kind, field_manager)]
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(kind, current, merged, dry_run)

    def update(self, kind: Kind, current: dict[str, Any], obj: dict[str, Any], dry_run: bool,
               subresource: str = "") -> dict[str, Any]:
        if subresource == "status":  # only status changes through the status subresource
            obj = {**copy.deepcopy(current), "status": obj.get("status", {})}
        elif kind.has_status:  # and the main resource never changes status
            obj.pop("status", None)
            if "status" in current:
                obj["status"] = current["status"]
        meta, old_meta = obj["metadata"], current["metadata"]
        for server_field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if server_field in old_meta:
                meta[server_field] = old_meta[server_field]
        if "generation" in old_meta and spec_of(obj) != spec_of(current):
            meta["generation"] = old_meta["generation"] + 1
        if kind.kind == "Service":
            self.keep_cluster_ip(obj, current)
        self.default_fields(kind, obj)
        self.validate(kind, obj)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if without_managed_fields(obj) == without_managed_fields(current):
            return current  # a no-op update keeps the resourceVersion, as on a real server
        if not dry_run:
            self.save(kind, obj)
        return copy.deepcopy(obj)

    def delete(self, kind: Kind, namespace: str, name: str, dry_run: bool = False) -> dict[str, Any]:
        obj = self.get(kind, namespace, name)
        if dry_run:
            return obj
        self.remove(kind, obj)
        if kind.kind == "Namespace":
            obj.setdefault("status", {})["phase"] = "Terminating"
            return obj
        if kind.kind == "Pod":
            return obj
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {**details_for(kind, name), "uid": obj["metadata"]["uid"]}}

    # --- internals, also used by the workload controller ---------------------------------------
    def save(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object under a fresh resourceVersion (no validation: callers did it or are the server)."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        meta = obj["metadata"]
        self.objects[(kind, meta.get("namespace", "") if kind.namespaced else "", meta["name"])] = obj
        return obj

    def remove(self, kind: Kind, obj: dict[str, Any]) -> None:
        """Delete an object plus what a real cluster's garbage collector and namespace controller would."""
        meta = obj["metadata"]
        self.objects.pop((kind, meta.get("namespace", "") if kind.namespaced else "", meta["name"]), None)
        self.revision += 1
        if kind.kind == "Namespace":
            for key in [k for k in self.objects if k[0].namespaced and k[1] == meta["name"]]:
                self.objects.pop(key, None)
        dependents = [
            (key[0], child) for key, child in self.objects.items()
            if any(ref.get("uid") == meta["uid"] for ref in child["metadata"].get("ownerReferences", []))
        ]
        for child_kind, child in dependents:
            self.remove(child_kind, child)

    def normalize(self, kind: Kind, namespace: str, body: Any) -> dict[str, Any]:
        """Check the body's type and scope against the URL; fill apiVersion/kind/namespace like the server."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        obj = copy.deepcopy(body)
        if obj.get("kind", kind.kind) != kind.kind or obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) and kind ({obj.get('kind')}) "
                              f"do not match the URL ({kind.api_version}, {kind.kind})")
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise invalid(kind, "", "metadata", "FieldValueInvalid", "Invalid value: must be an object")
        if kind.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def check_name(self, kind: Kind, name: str) -> None:
        if not name:
            raise invalid(kind, "", "metadata.name", "FieldValueRequired",
                          "Required value: name or generateName is required")
        pattern, limit = (DNS_LABEL, 63) if kind.kind == "Namespace" else (DNS_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.match(name):
            raise invalid(kind, name, "metadata.name", "FieldValueInvalid",
                          f'Invalid value: "{name}": a lowercase RFC 1123 name must consist of lower case '
                          f"alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")

    def require_namespace(self, kind: Kind, namespace: str) -> None:
        if kind.namespaced and self.find(find_kind("Namespace"), "", namespace) is None:
            raise not_found(find_kind("Namespace"), namespace)

    def check_resource_version(self, kind: Kind, name: str, current: dict[str, Any], wanted: str | None) -> None:
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {kind.qualified_plural} "{name}": the object has been '
                           "modified; please apply your changes to the latest version and try again",
                           details_for(kind, name))

    def validate(self, kind: Kind, obj: dict[str, Any]) -> None:
        error = validation.validate(obj, self.kubernetes_version)
        if error is not None:
            raise invalid(kind, obj["metadata"].get("name", ""), error.field, error.reason, error.message)
        if kind.kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise invalid(kind, obj["metadata"]["name"], f"data[{key}]", "FieldValueInvalid",
                                  "Invalid value: illegal base64 data") from None

    def default_fields(self, kind: Kind, obj: dict[str, Any]) -> None:
        """The few server defaults clients depend on."""
        if kind.kind == "Secret":
            for key, value in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")
        elif kind.kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        elif kind.kind == "Service":
            self.default_service(obj)

    def default_service(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        for port in spec.get("ports", []):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        # helm --wait treats a Service without a clusterIP as not ready
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            self.next_cluster_ip += 1
            spec["clusterIP"] = f"10.96.{self.next_cluster_ip // 250}.{self.next_cluster_ip % 250 + 1}"
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        obj.setdefault("status", {"loadBalancer": {}})

    def keep_cluster_ip(self, obj: dict[str, Any], current: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        if not spec.get("clusterIP") and current.get("spec", {}).get("clusterIP"):
            spec["clusterIP"] = current["spec"]["clusterIP"]


def managed_entry(kind: Kind, manager: str) -> dict[str, Any]:
    return {"manager": manager, "operation": "Apply", "apiVersion": kind.api_version, "time": now_iso(),
            "fieldsType": "FieldsV1", "fieldsV1": {}}


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}


def parse_body(raw: bytes, content_type: str) -> Any:
    """JSON, YAML (apply patches) or protobuf bodies into Python objects."""
    if content_type == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as error:
            raise ApiError(415, "UnsupportedMediaType", str(error)) from None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        if content_type != "application/apply-patch+yaml":
            raise bad_request("the request body is not valid JSON") from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise bad_request(f"the request body is not valid YAML: {error}") from None
