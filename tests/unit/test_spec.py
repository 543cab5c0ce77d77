"""Valid specs load, stay immutable, never hold secrets, and describe themselves as a JSON schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from remote_agents.errors import ConfigError
from remote_agents.spec import CRON_PRESETS, EnvironmentSpec, HealthSpec, load_spec, parse_spec

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "include" / "environments"
EXAMPLES = sorted(ENVIRONMENTS.glob("*.yaml"))
TUTORIAL = yaml.safe_load((ENVIRONMENTS / "tutorial.yaml").read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spec_loads(path: Path) -> None:
    spec = load_spec(path)

    assert spec.name == path.stem
    assert spec == parse_spec(yaml.safe_load(path.read_text()))


def test_tutorial_spec_is_the_tutorial() -> None:
    spec = load_spec(ENVIRONMENTS / "tutorial.yaml")

    assert spec.namespace == "my-namespace"
    assert spec.release_name == "astro-agent"
    assert [(w.name, w.queue) for w in spec.workers] == [("default-worker", "default")]
    assert spec.eks is not None and spec.eks.kubernetes_version == "1.33"
    assert spec.irsa is not None and spec.irsa.role_name == "AirflowS3LoggerXComRole"
    assert spec.backends.xcom.threshold_bytes == 0


def test_defaults_are_the_tutorials_except_its_placeholder_names() -> None:
    # Only what the tutorial makes up (ids, names, bucket) is written; every other value is a default.
    # Deliberate differences: namespace (the tutorial's `my-namespace` is a placeholder; the default is
    # `astro-agents`) and the bundle's refresh_interval (the tutorial polls git every 10 s; default 60 s).
    minimal = {
        "name": "tutorial",
        "astro": {key: TUTORIAL["astro"][key] for key in ("organization_id", "deployment_id", "deployment_api_url")},
        "cluster": {"kind": "eks", "name": "remote-execution-airflow-cluster", "region": "us-east-1"},
        "namespace": "my-namespace",
        "workers": [{"pip_packages": TUTORIAL["workers"][0]["pip_packages"]}],
        "dag_bundles": [{"name": "gitbundle-1", "repo_url": TUTORIAL["dag_bundles"][0]["repo_url"], "refresh_interval": 10}],
        "backends": {
            "aws_region": "us-east-1",
            "xcom": {"bucket": "my-airflow-bucket"},
            "logs": {"bucket": "my-airflow-bucket"},
        },
        "identity": {"mode": "irsa", "role_name": "AirflowS3LoggerXComRole"},
    }

    assert parse_spec(minimal) == load_spec(ENVIRONMENTS / "tutorial.yaml")


def test_spec_is_frozen() -> None:
    spec = load_spec(ENVIRONMENTS / "tutorial.yaml")

    with pytest.raises(ValidationError, match="frozen"):
        spec.namespace = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        spec.workers[0].replicas = 5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        spec.backends.xcom.bucket = "other"  # type: ignore[misc]


SECRET_PLACES = [
    ((), "agent_token"),
    (("astro",), "api-token"),
    (("chart",), "password"),
    (("cluster",), "aws_secret_access_key"),
    (("cluster", "node_groups", 0), "access_key"),
    (("workers", 0), "token"),
    (("workers", 0, "resources"), "secret"),
    (("backends", "xcom"), "secret_key"),
    (("identity",), "password"),
    (("health", "notifier"), "token"),
    (("dag_bundles", 0), "git_token"),
]


def _path(steps: tuple[str | int, ...]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


@pytest.mark.parametrize("where, key", SECRET_PLACES, ids=[_path((*w, k)) for w, k in SECRET_PLACES])
def test_spec_refuses_a_secret_anywhere(where: tuple[str | int, ...], key: str) -> None:
    data = copy.deepcopy(TUTORIAL)
    node: Any = data
    for step in where:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    node[key] = "hunter2-not-in-messages"

    with pytest.raises(ConfigError) as raised:
        parse_spec(data)

    assert [p.split(": ", 1)[0] for p in raised.value.problems] == [_path((*where, key))]
    assert "Connection" in raised.value.problems[0]
    assert "hunter2" not in str(raised.value)


def test_json_schema_builds() -> None:
    schema = EnvironmentSpec.model_json_schema()

    assert set(schema["required"]) == {"name", "astro", "cluster", "backends"}
    assert {"workers", "namespace", "identity", "health"} <= set(schema["properties"])
    assert schema["properties"]["astro"]["description"]
    json.dumps(schema)


def test_kubernetes_version_written_as_number_is_accepted() -> None:
    data = copy.deepcopy(TUTORIAL)
    data["cluster"]["kubernetes_version"] = 1.33

    assert parse_spec(data).cluster.kubernetes_version == "1.33"  # type: ignore[union-attr]


def test_deployment_url_trailing_slash_is_dropped() -> None:
    data = copy.deepcopy(TUTORIAL)
    data["astro"]["deployment_api_url"] += "/"

    assert parse_spec(data).astro.deployment_api_url == TUTORIAL["astro"]["deployment_api_url"]


# Airflow's own parser decides which schedules a Dag can run on; the spec checks them without
# importing it (seconds at every `remote-agents validate`), so this pins the two together.
SCHEDULES = ["*/30 * * * *", "@daily", "@hourly", "@weekly", "@monthly", "@quarterly", "@yearly", "0 6 * * 1-5",
             "@sometimes", "@once", "@continuous", "@every 5m", "61 * * * *", "* * *", "daily", "0 0 30 2 *"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_schedule_the_spec_accepts_is_one_airflow_runs_a_cron_timetable_on(schedule: str) -> None:
    from airflow.exceptions import AirflowTimetableInvalid
    from airflow.timetables.trigger import CronTriggerTimetable

    try:
        CronTriggerTimetable(schedule, timezone="UTC").validate()
        airflow_accepts = True
    except AirflowTimetableInvalid:
        airflow_accepts = False
    try:
        HealthSpec(schedule=schedule)
        spec_accepts = True
    except ValidationError:
        spec_accepts = False

    assert not spec_accepts or airflow_accepts  # stricter only where a schedule never fires (30 February)
    assert spec_accepts == airflow_accepts or schedule == "0 0 30 2 *"


def test_the_spec_s_cron_presets_are_airflow_s() -> None:
    from airflow.utils.dates import cron_presets

    assert {preset: cron_presets[preset] for preset in CRON_PRESETS} == CRON_PRESETS
