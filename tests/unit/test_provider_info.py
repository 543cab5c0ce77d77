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


def test_every_listed_module_and_hook_class_imports() -> None:
    import importlib

    info = remote_agents.get_provider_info()
    for group in ("operators", "hooks", "triggers"):
        for module in info[group][0]["python-modules"]:
            importlib.import_module(module)
    (astro,) = info["connection-types"]
    module, _, name = astro["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    assert hook.conn_type == astro["connection-type"] == "astro"


def test_airflow_registers_the_astro_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    hooks = ProvidersManager().hooks
    assert hooks["astro"] is not None and hooks["astro"].hook_class_name == "remote_agents.hooks.astro.AstroHook"
