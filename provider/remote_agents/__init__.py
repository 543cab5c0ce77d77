"""Airflow provider that bootstraps and health-checks Astro Remote Execution Agents."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-remote-agents",
        "name": "Remote Agents",
        "description": "Bootstrap and health-check Astro Remote Execution Agents on your own Kubernetes cluster.",
        "versions": [__version__],
    }
