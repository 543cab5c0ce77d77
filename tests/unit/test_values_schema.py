"""The agent chart's values schema (include/schemas/agent-values.schema.json) accepts the tutorial's
values and rejects the known mistakes, each with an error at the offending key."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "include" / "schemas" / "agent-values.schema.json"
CHART = ROOT / "sandbox" / "chart"

Values = dict[str, Any]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def load_values(name: str) -> Values:
    return yaml.safe_load((CHART / "ci" / name).read_text())


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_every_property_has_a_description() -> None:
    def undocumented(node: Any, path: str) -> list[str]:
        missing = []
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{path}/{name}")
            for key, sub in node.items():
                if key != "if":  # a condition, not a documented property
                    missing += undocumented(sub, f"{path}/{key}")
        return missing

    assert undocumented(json.loads(SCHEMA_PATH.read_text()), "") == []


@pytest.mark.parametrize("values_file", ["tutorial-values.yaml", "multi-queue-values.yaml"])
def test_schema_accepts_example_values(validator: Draft202012Validator, values_file: str) -> None:
    errors = [e.message for e in validator.iter_errors(load_values(values_file))]
    assert errors == []


def test_schema_accepts_chart_defaults(validator: Draft202012Validator) -> None:
    assert [e.message for e in validator.iter_errors(yaml.safe_load((CHART / "values.yaml").read_text()))] == []


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[Values], None]:
    def mutate(values: Values) -> None:
        node = values
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(key: str) -> Callable[[Values], None]:
    return lambda values: values.pop(key)


def _workers_as_map(values: Values) -> None:
    values["workers"] = {w.pop("name"): w for w in values["workers"]}


WORKER = ("workers", 0)
BAD_VALUES = [
    pytest.param(_set((*WORKER, "queues"), "default,default"), WORKER + ("queues",), "pattern", id="duplicate-queues-in-one-entry"),
    pytest.param(_set((*WORKER, "queues"), "a,b"), WORKER + ("queues",), "pattern", id="comma-separated-queues"),
    pytest.param(_set((*WORKER, "queues"), "a b"), WORKER + ("queues",), "pattern", id="space-separated-queues"),
    pytest.param(_set((*WORKER, "queues"), ["a"]), WORKER + ("queues",), "type", id="queues-as-list"),
    pytest.param(_set((*WORKER, "queues"), ""), WORKER + ("queues",), "pattern", id="empty-queue"),
    pytest.param(_workers_as_map, ("workers",), "type", id="workers-as-map"),
    pytest.param(_set((*WORKER, "replicas"), 0), WORKER + ("replicas",), "minimum", id="replicas-zero"),
    pytest.param(_set((*WORKER, "volumeMount"), []), WORKER, "additionalProperties", id="misspelled-worker-key"),
    pytest.param(lambda v: v["workers"][0].pop("queues"), WORKER, "required", id="worker-without-queue"),
    pytest.param(_set((*WORKER, "name"), "Default_Worker"), WORKER + ("name",), "pattern", id="worker-name-not-dns"),
    pytest.param(_set((*WORKER, "env", 0, "value"), "/shared/packages:$PYTHONPATH"), WORKER + ("env", 0, "value"), "not", id="pythonpath-with-shell-variable"),
    pytest.param(_set(("commonEnv", 6, "value"), True), ("commonEnv", 6, "value"), "type", id="boolean-common-env-value"),
    pytest.param(_set(("commonEnv", 13, "value"), 0), ("commonEnv", 13, "value"), "type", id="number-common-env-value"),
    pytest.param(_set(("commonEnv",), {"ASTRONOMER_ENVIRONMENT": "cloud"}), ("commonEnv",), "type", id="common-env-as-map"),
    pytest.param(_set(("resourceNamePrefix",), ""), ("resourceNamePrefix",), "minLength", id="empty-resource-name-prefix"),
    pytest.param(_set(("resourceNamePrefix",), None), ("resourceNamePrefix",), "type", id="null-resource-name-prefix"),
    pytest.param(_set(("resourceNamePrefix",), "My_Agents"), ("resourceNamePrefix",), "pattern", id="resource-name-prefix-not-dns"),
    pytest.param(_set(("imagePullSecretData",), '{"auths": {}}'), (), "oneOf", id="both-image-pull-secret-name-and-data"),
    pytest.param(_delete("imagePullSecretName"), (), "oneOf", id="no-image-pull-secret"),
    pytest.param(_set(("agentToken",), "plain"), (), "not", id="agent-token-secret-name-and-agent-token"),
    pytest.param(_set(("comonEnv",), []), (), "additionalProperties", id="misspelled-top-level-key"),
    pytest.param(_delete("namespace"), (), "required", id="missing-namespace"),
    pytest.param(_set(("dagBundleConfigList",), [{"name": "dags"}]), ("dagBundleConfigList",), "type", id="dag-bundle-config-list-as-list"),
    pytest.param(_set(("dagBundleConfigList",), '{"name": "dags"}'), ("dagBundleConfigList",), "pattern", id="dag-bundle-config-list-as-json-object"),
    pytest.param(_set(("astroDeploymentAPIURL",), "http://cl.external.astronomer.run/d1"), ("astroDeploymentAPIURL",), "pattern", id="http-api-url"),
    pytest.param(_set(("xcomBackend",), "s3://bucket/xcom"), ("xcomBackend",), "pattern", id="xcom-backend-not-a-class-path"),
    pytest.param(_delete("secretBackend"), (), "required", id="missing-secret-backend"),
    pytest.param(_set(("logLevel",), "VERBOSE"), ("logLevel",), "enum", id="unknown-log-level"),
    pytest.param(_set(("serviceAccount",), {"workers": {"create": "yes"}}), ("serviceAccount", "workers", "create"), "type", id="service-account-create-as-string"),
    pytest.param(_set(("triggerer",), {"replicas": 0}), ("triggerer", "replicas"), "minimum", id="triggerer-replicas-zero"),
    pytest.param(_set(("openLineage",), {"enabled": "yes"}), ("openLineage", "enabled"), "type", id="openlineage-enabled-as-string"),
    pytest.param(_set(("annotations",), {"eks.amazonaws.com/role-arn": None}), ("annotations", "eks.amazonaws.com/role-arn"), "type", id="null-annotation"),
]


@pytest.mark.parametrize(("mutate", "path", "keyword"), BAD_VALUES)
def test_schema_rejects_bad_values_at_the_offending_key(
    validator: Draft202012Validator, mutate: Callable[[Values], None], path: tuple[str | int, ...], keyword: str
) -> None:
    values = copy.deepcopy(load_values("tutorial-values.yaml"))
    mutate(values)

    found = {(tuple(e.absolute_path), e.validator) for e in validator.iter_errors(values)}

    assert (path, keyword) in found, found
