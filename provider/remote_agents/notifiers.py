"""Health notifications through the http provider's stock ``HttpNotifier``: Slack or a webhook.

``HealthNotifier`` posts one message per incident (the failed checks) and one on recovery; the
health and drift Dags decide when (``incident_transition``), so a healthy run sends nothing. The
Connection is an ``http`` Connection as ``HttpHook`` reads it: host = the URL (with its scheme, or
host + schema + port), extra = request headers. For ``slack`` the host is the app's incoming-webhook
URL. The URL is masked before the request is made, since a Slack webhook URL is itself a credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from airflow.providers.http.notifications.http import HttpNotifier

from remote_agents.errors import ConfigError, HealthCheckError

NotifierKind = Literal["slack", "webhook"]


class HealthNotifier(HttpNotifier):
    """Send a health incident or recovery to Slack or an HTTP webhook, as a POST of JSON.

    :param kind: ``slack`` (posts ``{"text": ...}``, Slack's incoming-webhook body) or ``webhook``
        (posts the whole ``payload`` plus ``text``)
    :param connection_id: the ``http`` Connection whose host is the URL (extra: headers)
    :param text: the message (templated, as the whole body is)
    :param payload: structured fields for webhooks (status, environment, findings); never secrets

    Usage in a custom Dag (as a callback, or called from a task with its context)::

        on_failure_callback=HealthNotifier(kind="webhook", connection_id="ops_webhook",
                                           text="{{ dag.dag_id }} failed in {{ run_id }}")
    """

    def __init__(self, *, kind: NotifierKind, connection_id: str, text: str,
                 payload: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        body = {"text": text} if kind == "slack" else {**(payload or {}), "text": text}
        super().__init__(http_conn_id=connection_id, json=body, **kwargs)
        self.kind = kind

    def notify(self, context: Any) -> None:
        from airflow.providers.common.compat.sdk import AirflowException
        from airflow.sdk.log import mask_secret
        from requests import RequestException

        url = self.hook.url_from_endpoint(None)
        if "://" not in url or url.endswith("://"):
            raise ConfigError([f"host: connection {self.http_conn_id!r} has no URL; set it to the webhook URL"],
                              source=f"connection {self.http_conn_id}")
        mask_secret(url)
        try:
            super().notify(context)
        except RequestException as error:
            raise HealthCheckError(
                f"{self.kind} notification via connection {self.http_conn_id!r} could not be sent "
                f"({type(error).__name__}); check the URL in the connection and the network path"
            ) from None
        except AirflowException as error:  # HttpHook's "<status>:<reason>" for a refusal
            raise HealthCheckError(
                f"{self.kind} notification via connection {self.http_conn_id!r} was refused ({error}); check the "
                "webhook URL (Slack: the app's incoming webhook is still active)"
            ) from None
        self.log.info("Sent %s notification via %s", self.kind, self.http_conn_id)


def incident_transition(previous: Mapping[str, Any] | None, failed_checks: Sequence[str]) -> str | None:
    """What to announce: "incident" (newly failing, or a different set of checks), "recovery", or None."""
    if failed_checks:
        if previous and sorted(previous.get("failed_checks", [])) == sorted(failed_checks):
            return None
        return "incident"
    return "recovery" if previous else None
