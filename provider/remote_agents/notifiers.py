"""Health notifications through Airflow notifiers: a Slack incoming webhook or a generic HTTP webhook.

``HealthNotifier`` posts one message per incident (the failed checks) and one on recovery; the
health Dag decides when (``incident_transition``), so a healthy run sends nothing. The webhook URL
lives in a Connection: for ``webhook``, host (with schema/port, or a full URL) and an optional
``extra.headers``; for ``slack``, the incoming-webhook URL in password (or host). The URL is masked
as soon as it is read, since a Slack webhook URL is itself a credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.log import mask_secret

from remote_agents.errors import ConfigError, HealthCheckError

NotifierKind = Literal["slack", "webhook"]


class HealthNotifier(BaseNotifier):
    """Send a health incident or recovery to Slack or an HTTP webhook.

    :param kind: ``slack`` (posts ``{"text": ...}``) or ``webhook`` (posts the whole ``payload`` plus ``text``)
    :param connection_id: the Connection holding the URL
    :param text: the message (templated)
    :param payload: structured fields for webhooks (status, environment, findings); never secrets

    Usage in a custom Dag (as a callback, or called from a task with its context)::

        on_failure_callback=HealthNotifier(kind="webhook", connection_id="ops_webhook",
                                           text="{{ dag.dag_id }} failed in {{ run_id }}")
    """

    template_fields = ("text",)

    def __init__(self, *, kind: NotifierKind, connection_id: str, text: str,
                 payload: Mapping[str, Any] | None = None, timeout: float = 15.0) -> None:
        super().__init__()
        self.kind = kind
        self.connection_id = connection_id
        self.text = text
        self.payload = dict(payload or {})
        self.timeout = timeout

    def url(self) -> str:
        conn = BaseHook.get_connection(self.connection_id)
        if self.kind == "slack" and conn.password:
            url = conn.password
        else:
            host = (conn.host or "").rstrip("/")
            if not host:
                raise ConfigError([f"host: connection {self.connection_id!r} has no URL; set it to the webhook URL"],
                                  source=f"connection {self.connection_id}")
            if "://" not in host:
                host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
            url = host
        mask_secret(url)
        return url

    def body(self) -> dict[str, Any]:
        if self.kind == "slack":
            return {"text": self.text}
        return {**self.payload, "text": self.text}

    def notify(self, context: Any) -> None:
        conn = BaseHook.get_connection(self.connection_id)
        headers = dict(conn.extra_dejson.get("headers") or {}) if self.kind == "webhook" else {}
        try:
            response = httpx.post(self.url(), json=self.body(), headers=headers, timeout=self.timeout)
        except httpx.TransportError as error:
            raise HealthCheckError(
                f"{self.kind} notification via connection {self.connection_id!r} could not be sent "
                f"({type(error).__name__}); check the URL in the connection and the network path"
            ) from None
        if response.is_error:
            raise HealthCheckError(
                f"{self.kind} notification via connection {self.connection_id!r} was refused: HTTP "
                f"{response.status_code}; check the webhook URL (Slack: the app's incoming webhook is still active)"
            )
        self.log.info("Sent %s notification via %s", self.kind, self.connection_id)


def incident_transition(previous: Mapping[str, Any] | None, failed_checks: Sequence[str]) -> str | None:
    """What to announce: "incident" (newly failing, or a different set of checks), "recovery", or None."""
    if failed_checks:
        if previous and sorted(previous.get("failed_checks", [])) == sorted(failed_checks):
            return None
        return "incident"
    return "recovery" if previous else None
