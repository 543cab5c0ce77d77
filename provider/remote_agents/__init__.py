"""Airflow provider that bootstraps and health-checks Astro Remote Execution Agents."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

INTEGRATION = "Astro Remote Execution Agents"


def _modules(package: str, names: list[str]) -> list[dict[str, Any]]:
    return [{"integration-name": INTEGRATION, "python-modules": [f"remote_agents.{package}.{n}" for n in names]}]


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-remote-agents",
        "name": "Remote Agents",
        "description": "Bootstrap and health-check Astro Remote Execution Agents on your own Kubernetes cluster.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://www.astronomer.io/docs/astro/remote-execution-overview",
                "tags": ["service"],
            }
        ],
        "operators": _modules("operators", ["astro", "cluster", "helm", "irsa", "kubernetes", "secrets_manager", "selftest"]),
        "hooks": _modules("hooks", ["astro", "aws", "cluster", "deployment", "helm", "kubernetes"]),
        "triggers": _modules("triggers", ["cluster", "dag_run", "rollout", "vpc"]),
        "notifications": ["remote_agents.notifiers.HealthNotifier"],
        "connection-types": [
            {
                "hook-class-name": "remote_agents.hooks.astro.AstroHook",
                "hook-name": "Astro Platform API",
                "connection-type": "astro",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "API base URL", "password": "API token"},
                    "placeholders": {"host": "https://api.astronomer.io/v1"},
                },
                "conn-fields": {
                    "organization_id": {"label": "Organization ID", "schema": {"type": ["string", "null"]}},
                },
            }
        ],
    }
