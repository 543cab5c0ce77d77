"""How a check task ends: each finding on its own log line, a one-line failure, and what green checks verified."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from remote_agents.health import diagnose
from remote_agents.health.checks import fail_on, verified
from remote_agents.health.diagnose import Finding


class RecordingTaskInstance:
    """Only what ``fail_on`` uses of a task instance: its XCom push."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


ROLE = Finding(diagnose.XCOM, "queue default", "access denied on s3://b/xcom/", "403 PutObject", "re-run the bootstrap")
BUCKET = Finding(diagnose.XCOM, "queue heavy", "bucket missing", "404 HeadBucket", "create it")
EXPIRING = Finding(diagnose.AGENT_TOKEN, "token t", "expires in 3 days", "expiresAt", "rotate", severity=diagnose.WARNING)


def test_findings_are_logged_one_per_line_and_the_task_fails_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    ti = RecordingTaskInstance()
    with caplog.at_level(logging.INFO), pytest.raises(AirflowFailException) as failure:
        fail_on([ROLE, BUCKET, EXPIRING], ti, logging.getLogger("check"), "check_xcom")

    assert str(failure.value) == "check_xcom: queue default: access denied on s3://b/xcom/ (and 1 more, each logged above)"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", ROLE.message), ("ERROR", BUCKET.message), ("WARNING", EXPIRING.message)]
    assert ti.pushed[diagnose.FINDINGS_KEY] == [f.to_dict() for f in (ROLE, BUCKET, EXPIRING)]


def test_warnings_alone_do_not_fail_the_task() -> None:
    ti = RecordingTaskInstance()

    assert fail_on([EXPIRING], ti, logging.getLogger("check"), "check_agent_token") == [EXPIRING.to_dict()]


def test_green_checks_say_what_they_verified_per_queue() -> None:
    collected = {"facts": {"canary_digest": "0123456789abcdef"},
                 "selftest": {"queues": {"default": {"xcom_reference": "s3://x/xcom/run/key", "log_object_key": "logs/k.log",
                                                     "identity_arn": "arn:aws:sts::1:assumed-role/r/s"}}}}

    assert verified(diagnose.XCOM, collected) == ["queue default: XCom object s3://x/xcom/run/key read back by the management side"]
    assert verified(diagnose.SECRETS, collected) == ["queue default: canary Variable and Connection read with digest 0123456789ab…"]
    assert verified(diagnose.IDENTITY, collected) == ["queue default: the agent called AWS as arn:aws:sts::1:assumed-role/r/s"]
    assert verified(diagnose.DEFERRAL, collected) == []
