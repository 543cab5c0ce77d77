"""The published Astro Platform API v1 document, enforced on every request the Astro emulator serves.

The document is pinned in ``sandbox/contracts/`` (its README names the source, revision and date).
openapi-core does the matching and the schema checks; this module only turns its findings into the
API's own ``Error`` shape, with one ``fieldErrors`` entry per failed constraint.

Departures from the document, each deliberate:
- Request objects are closed (``additionalProperties: false``). The document does not say so, and
  a real server may ignore an unknown field; but an ignored field is a setting we believe we sent
  and did not (``type`` in place of ``scope`` was exactly that), so the emulator refuses it.
- The document's ``servers`` entry is the public host; the emulator serves the same paths under
  ``/v1`` on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.validation.request.exceptions import ParameterValidationError, SecurityValidationError
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue
from werkzeug.wrappers import Request, Response

DOCUMENT_PATH = Path(__file__).parent / "contracts" / "astro-platform-api-v1.yaml"
BASE_PATH = "/v1"


@dataclass(frozen=True)
class Operation:
    """The document's operation that a request matched."""

    operation_id: str
    permission: str | None  # the document's x-permission action, e.g. "organization.apiTokens.access"
    path_params: dict[str, str]


class ApiError(Exception):
    """An answer in the API's ``Error`` shape: the status, the message and its ``fieldErrors``."""

    def __init__(self, status: int, message: str, field_errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field_errors = field_errors or []


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The pinned document as published (parsed once per process)."""
    with DOCUMENT_PATH.open("rb") as stream:
        return yaml.load(stream, Loader=yaml.CSafeLoader)


@lru_cache(maxsize=1)
def _openapi() -> OpenAPI:
    served = {**document(), "servers": [{"url": BASE_PATH}]}
    served["components"] = {**served["components"], "schemas": _closed_requests(served["components"]["schemas"])}
    # The document itself is checked once by a test (test_astro_contract), not at every start.
    return OpenAPI.from_dict(served, config=Config(spec_validator_cls=None))


def _closed_requests(schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {**schema, "additionalProperties": False}
        if name.endswith("Request") and "properties" in schema and "additionalProperties" not in schema
        else schema
        for name, schema in schemas.items()
    }


def find_operation(request: Request) -> Operation:
    """The document's operation a request calls; ApiError 404 (path) or 405 (method) if none."""
    try:
        found = APICallPathFinder(_openapi().spec).find(request.method.lower(), request.base_url)
    except PathNotFound:
        raise ApiError(404, f"no such route: {request.path}") from None
    except OperationNotFound:
        raise ApiError(405, f"method {request.method} not allowed on {request.path}") from None
    _, template, method = found.operation.parts
    declared = document()["paths"][template][method]
    return Operation(
        operation_id=declared["operationId"],
        permission=(declared.get("x-permission") or [{}])[0].get("action"),
        path_params=dict(found.path_result.variables),
    )


def check_security(request: Request) -> None:
    """ApiError 401 unless the request carries the document's security (a bearer token)."""
    errors = _openapi().unmarshal_request(WerkzeugOpenAPIRequest(request)).errors
    if any(isinstance(error, SecurityValidationError) for error in errors):
        raise ApiError(401, "Unauthorized: missing bearer token")


def check_parameters_and_body(request: Request) -> None:
    """ApiError 400, one ``fieldErrors`` entry per constraint the query or body breaks."""
    errors = _openapi().unmarshal_request(WerkzeugOpenAPIRequest(request)).errors
    field_errors = [entry for error in errors for entry in _field_errors(error)]
    if field_errors:
        raise ApiError(400, "; ".join(f"{e['field']}: {e['message']}" for e in field_errors), field_errors)


def response_problems(request: Request, response: Response) -> list[str]:
    """Where a response the emulator built departs from the document's response schema (empty if nowhere)."""
    errors = _openapi().unmarshal_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)).errors
    return [message for error in errors for message in _messages(error)]


def _field_errors(error: Exception) -> Iterator[dict[str, str]]:
    parameter = error.name if isinstance(error, ParameterValidationError) else None
    schema_errors = _schema_errors(error)
    if not schema_errors:
        yield {"code": type(error).__name__, "field": parameter or "body", "message": str(error)}
    for schema_error in schema_errors:
        field_name = ".".join(part for part in (parameter, _field(schema_error)) if part) or "body"
        yield {"code": str(schema_error.validator), "field": field_name, "message": schema_error.message}


def _schema_errors(error: Exception) -> list[ValidationError]:
    cause = error.__cause__
    return list(cause.schema_errors) if isinstance(cause, InvalidSchemaValue) else []


def _field(error: ValidationError) -> str:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        path.append(error.message.split("'")[1])
    elif error.validator == "additionalProperties" or "discriminating property" in error.message:
        # jsonschema quotes the name: "('type' was unexpected)", "does not contain discriminating property 'type'"
        path.append(error.message.split("'")[-2])
    return ".".join(path)


def _messages(error: Exception) -> Iterator[str]:
    schema_errors = _schema_errors(error)
    if not schema_errors:
        yield f"{type(error).__name__}: {error}"
    for schema_error in schema_errors:
        yield f"{_field(schema_error) or 'body'}: {schema_error.message}"
