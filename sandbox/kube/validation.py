"""Schema validation of written objects with kubernetes-validate, as a real API server would reject them.

`kubernetes_validate.validate()` re-reads the 1.4 MB definitions file and rebuilds a validator on
every call (~5 ms warm, ~0.2 s cold with imports). We build the identical validator once per
(Kubernetes version, apiVersion, kind) and keep it: a cached call takes ~0.2 ms.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv
from packaging.version import Version
from referencing import Registry, Resource


@dataclass(frozen=True)
class FieldError:
    field: str  # e.g. spec.template.spec.containers[0].image
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported
    message: str


@functools.lru_cache(maxsize=None)
def schema_directory(kubernetes_version: str) -> str:
    """Same choice as kubernetes_validate.validate(): the newest bundled schema not newer than asked."""
    wanted = kv.major_minor(kubernetes_version.lstrip("v"))
    candidates = [v for v in kv.all_versions() if Version(kv.major_minor(v)) <= Version(wanted)]
    if not candidates:
        raise kv.VersionNotSupportedError(wanted)
    return f"kubernetes-json-schema/v{candidates[-1]}-local-strict"


@functools.lru_cache(maxsize=8)
def definitions(directory: str) -> Resource[Any]:
    return Resource.from_contents(kv.schema_contents(f"{directory}/_definitions.json", directory))


@functools.lru_cache(maxsize=None)
def validator_for(kubernetes_version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    """None when kubernetes-validate bundles no schema for this kind (then we accept the object)."""
    directory = schema_directory(kubernetes_version)
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files
    file_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv.schema_contents(f"{directory}/{kind.lower()}-{file_version}.json", directory)
    except FileNotFoundError:
        return None
    registry = definitions(directory) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(obj: dict[str, Any], kubernetes_version: str) -> FieldError | None:
    """The first schema violation in `obj` (strict: unknown fields are errors), or None."""
    validator = validator_for(kubernetes_version, obj["apiVersion"], obj["kind"])
    if validator is None:
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    return None if error is None else field_error(error)


def field_error(error: jsonschema.ValidationError) -> FieldError:
    path = field_path(list(error.absolute_path))
    if error.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)'", error.message.split("(", 1)[-1])
        field = ".".join(p for p in (path, unknown[0] if unknown else "") if p)
        return FieldError(field, "FieldValueInvalid", f'unknown field "{field}"')
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        field = ".".join(p for p in (path, missing[0] if missing else "") if p)
        return FieldError(field, "FieldValueRequired", "Required value")
    if error.validator == "enum":
        return FieldError(path, "FieldValueNotSupported", f"Unsupported value: {error.message}")
    return FieldError(path, "FieldValueInvalid", f"Invalid value: {error.message}")


def field_path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
