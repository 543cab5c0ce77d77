"""Airflow finds the provider through its entry point and reads sane metadata."""

from __future__ import annotations

from importlib.metadata import entry_points

import remote_agents


def test_entry_point_resolves_to_get_provider_info() -> None:
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("remote_agents")]
    assert entry.load() is remote_agents.get_provider_info


def test_provider_info_names_the_distribution_and_version() -> None:
    info = remote_agents.get_provider_info()
    assert info["package-name"] == "airflow-provider-remote-agents"
    assert info["versions"] == [remote_agents.__version__]
