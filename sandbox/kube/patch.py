"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximate strategic merge.

Strategic merge here is JSON merge plus the parts clients actually send: lists of named things
(containers, env, volumes, ports, ...) merged element-wise by their merge key, and the `$patch`,
`$retainKeys`, `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives. Server-side apply
reuses it, so an applied manifest merges into the live object the same way.
"""

from __future__ import annotations

import copy
from typing import Any

# field name -> merge key, as in the Kubernetes Go types' `patchMergeKey` tags
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "ownerReferences": "uid",
}


class PatchError(ValueError):
    """The patch cannot be applied (bad path, failed test op); answered with 422."""


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$patch":
            continue  # ordering hints only
        if key == "$retainKeys":
            result = {k: v for k, v in result.items() if k in value or k in patch}
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = merge_list(key, result.get(key), value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    merge_key = list_merge_key(field, patch)
    if merge_key is None or not isinstance(current, list):
        return [copy.deepcopy(item) for item in patch if not is_delete_directive(item)]
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)), None)
        if is_delete_directive(item):
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def list_merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if field == "ports":  # container ports merge on containerPort, Service ports on port
        return "containerPort" if "containerPort" in items[0] else "port"
    return MERGE_KEYS.get(field)


def is_delete_directive(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    document = copy.deepcopy(target)
    for op in operations:
        document = apply_operation(document, op)
    return document


def apply_operation(document: Any, op: dict[str, Any]) -> Any:
    name = op.get("op")
    if name == "test":
        if resolve(document, op["path"]) != op.get("value"):
            raise PatchError(f"test operation failed at {op['path']}")
        return document
    if name in ("move", "copy"):
        value = copy.deepcopy(resolve(document, op["from"]))
        if name == "move":
            document = set_at(document, op["from"], None, remove=True)
        return set_at(document, op["path"], value, insert=True)
    if name == "add":
        return set_at(document, op["path"], copy.deepcopy(op.get("value")), insert=True)
    if name == "replace":
        resolve(document, op["path"])  # replace requires the target to exist
        return set_at(document, op["path"], copy.deepcopy(op.get("value")))
    if name == "remove":
        return set_at(document, op["path"], None, remove=True)
    raise PatchError(f"unknown json patch op {name!r}")


def pointer_tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.lstrip("/").split("/")]


def resolve(document: Any, pointer: str) -> Any:
    return resolve_tokens(document, pointer_tokens(pointer), pointer)


def resolve_tokens(document: Any, tokens: list[str], pointer: str) -> Any:
    node = document
    for token in tokens:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise PatchError(f"path {pointer} does not exist") from None
    return node


def set_at(document: Any, pointer: str, value: Any, insert: bool = False, remove: bool = False) -> Any:
    tokens = pointer_tokens(pointer)
    if not tokens:
        return value
    parent = resolve_tokens(document, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if remove:
            parent.pop(index)
        elif insert:
            parent.insert(index, value)
        else:
            parent[index] = value
    elif isinstance(parent, dict):
        if remove:
            if last not in parent:
                raise PatchError(f"path {pointer} does not exist")
            del parent[last]
        else:
            parent[last] = value
    else:
        raise PatchError(f"path {pointer} does not exist")
    return document
