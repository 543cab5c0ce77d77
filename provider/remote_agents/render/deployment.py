"""The Astro Deployment's Remote Execution settings that follow from an EnvironmentSpec. Pure."""

from __future__ import annotations

from remote_agents.spec import EnvironmentSpec

# Airflow 3's default `[logging] log_filename_template`, which the agents write their logs under
# (the values set no other). The Astro CLI's `--task-log-url-pattern` help shows the same form.
LOG_FILENAME_TEMPLATE = (
    "dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/task_id={{ ti.task_id }}/"
    "{% if ti.map_index >= 0 %}map_index={{ ti.map_index }}/{% endif %}"
    "attempt={{ try_number|default(ti.try_number) }}.log"
)


def build_task_log_settings(spec: EnvironmentSpec) -> dict[str, str]:
    """The task log bucket and URL pattern of a Deployment whose agents log to ``backends.logs``."""
    logs = spec.backends.logs
    return {"task_log_bucket": f"s3://{logs.bucket}/{logs.prefix}", "task_log_url_pattern": LOG_FILENAME_TEMPLATE}
