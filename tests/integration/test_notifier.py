"""The health notifier (the stock HttpNotifier underneath) against a webhook sink on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from remote_agents.errors import ConfigError, HealthCheckError
from remote_agents.notifiers import HealthNotifier
from sandbox.webhook import WebhookSink


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    webhook = WebhookSink().start()
    monkeypatch.setitem(os.environ, "AIRFLOW_CONN_OPS_HOOK", json.dumps(
        {"conn_type": "http", "host": webhook.url, "extra": {"X-Team": "platform"}}))
    monkeypatch.setitem(os.environ, "AIRFLOW_CONN_NO_URL", json.dumps({"conn_type": "http"}))
    yield webhook
    webhook.stop()


def test_webhook_gets_the_payload_and_the_text_with_the_connections_headers(sink: WebhookSink) -> None:
    HealthNotifier(kind="webhook", connection_id="ops_hook", text="down", payload={"status": "incident"}).notify({})

    assert sink.messages == [{"status": "incident", "text": "down"}]
    assert sink.headers[0]["X-Team"] == "platform"


def test_slack_gets_only_the_text_and_the_url_is_masked(sink: WebhookSink) -> None:
    from airflow.sdk.log import redact

    HealthNotifier(kind="slack", connection_id="ops_hook", text="down", payload={"status": "incident"}).notify({})

    assert sink.messages == [{"text": "down"}]
    assert sink.url not in str(redact(f"posted to {sink.url}"))


def test_a_refused_notification_names_the_connection_and_the_status(sink: WebhookSink) -> None:
    sink.fail_next(403)

    with pytest.raises(HealthCheckError, match=r"via connection 'ops_hook' was refused \(403"):
        HealthNotifier(kind="webhook", connection_id="ops_hook", text="down").notify({})


def test_a_connection_without_a_url_is_a_config_error(sink: WebhookSink) -> None:
    with pytest.raises(ConfigError, match="has no URL"):
        HealthNotifier(kind="webhook", connection_id="no_url", text="down").notify({})
