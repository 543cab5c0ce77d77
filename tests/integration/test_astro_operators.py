"""Agent token and registry Secret operators against the sandbox's Astro and Kubernetes emulators."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from remote_agents.errors import AstroApiError, ClusterError, ConfigError
from remote_agents.hooks.astro import AstroHook
from remote_agents.hooks.cluster import ClusterAccess
from remote_agents.hooks.kubernetes import ClusterObjects
from remote_agents.operators.astro import (
    TOKEN_ID_ANNOTATION,
    EnsureAgentTokenOperator,
    EnsureRegistrySecretOperator,
    RevokeAgentTokenOperator,
    RevokeRegistryTokenOperator,
    UpdateRemoteExecutionSettingsOperator,
)
from remote_agents.operators.kubernetes import RESTARTED_AT_ANNOTATION, EnsureNamespaceOperator
from remote_agents.triggers.rollout import RolloutTrigger

if TYPE_CHECKING:
    from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

NS = "astro-agents"
ENV = "sandbox"
DEP = "sandbox-deployment"
KUBE = {"kubernetes_conn_id": "kubernetes_default"}
AGENT_LABELS = {"app": "astro-agent", "release": "astro-agent"}


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """A clean sandbox with the agents' namespace; call logs cleared."""
    sandbox.reset()
    EnsureNamespaceOperator(task_id="namespace", namespace=NS, environment=ENV, **KUBE).execute({})
    sandbox.kube.reset_counters()
    yield sandbox


def agent_op(**kwargs: Any) -> EnsureAgentTokenOperator:
    options = {"deployment_id": DEP, "namespace": NS, "environment": ENV, "poll_interval": 0.1, **KUBE, **kwargs}
    return EnsureAgentTokenOperator(task_id="agent_token", **options)


def registry_op(**kwargs: Any) -> EnsureRegistrySecretOperator:
    options = {"deployment_id": DEP, "namespace": NS, "environment": ENV, **KUBE, **kwargs}
    return EnsureRegistrySecretOperator(task_id="registry", **options)


def secret(sb: Sandbox, name: str = "astro-agent-token") -> dict[str, Any]:
    return sb.kube.get_object("Secret", name, NS)


def agent_token_in_secret(sb: Sandbox) -> str:
    return base64.b64decode(secret(sb)["data"]["token"]).decode()


def registry_login(sb: Sandbox) -> dict[str, str]:
    config = json.loads(base64.b64decode(secret(sb, "astro-registry")["data"][".dockerconfigjson"]))
    return config["auths"]["images.astronomer.cloud"]


def kube_writes(sb: Sandbox) -> list[tuple[str, str]]:
    return [(m.method, m.kind) for m in sb.kube.mutations if not m.dry_run]


def actions(result: dict[str, Any]) -> list[str]:
    return [change["action"] for change in result["changes"]]


def agent_deployment(sb: Sandbox, name: str = "astro-agent-worker") -> None:
    labels = {**AGENT_LABELS, "component": name}
    container = {"name": "agent", "image": "images.astronomer.cloud/agent:1.8.2"}
    ClusterObjects(ClusterAccess(**KUBE)).create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container]}}},
    })


def restarted_at(sb: Sandbox, name: str = "astro-agent-worker") -> str | None:
    template = sb.kube.get_object("Deployment", name, NS)["spec"]["template"]
    return (template["metadata"].get("annotations") or {}).get(RESTARTED_AT_ANNOTATION)


def first_event(trigger: RolloutTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger yielded no event")

    return asyncio.run(run())


def rotate_until_deferred(sb: Sandbox) -> tuple[str, TaskDeferred]:
    """A converged agent token and one agent Deployment, then rotate=True up to the deferral."""
    agent_deployment(sb)
    old_id = agent_op().execute({})["token_id"]
    sb.kube.reset_counters()
    with pytest.raises(TaskDeferred) as deferred:
        agent_op(rotate=True, restart_selector="app=astro-agent", deferrable=True).execute({})
    return old_id, deferred.value


# -- agent token -----------------------------------------------------------------------------------


def test_agent_token_is_created_straight_into_the_secret(sb: Sandbox) -> None:
    result = agent_op().execute({})

    assert actions(result) == ["created", "created"]
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert secret(sb)["metadata"]["annotations"][TOKEN_ID_ANNOTATION] == result["token_id"]


def test_agent_token_second_run_makes_zero_writes(sb: Sandbox) -> None:
    agent_op().execute({})
    sb.kube.reset_counters()
    sb.astro.clear_calls()

    result = agent_op().execute({})

    assert actions(result) == ["unchanged", "unchanged"]
    assert (kube_writes(sb), sb.astro.mutating_calls) == ([], [])


def test_revoked_token_is_replaced_in_one_secret_write(sb: Sandbox) -> None:
    old_id = agent_op().execute({})["token_id"]
    AstroHook().delete_agent_token(DEP, old_id)
    sb.kube.reset_counters()

    result = agent_op().execute({})

    assert result["token_id"] != old_id
    assert kube_writes(sb) == [("PUT", "Secret")]
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)


def test_deleted_secret_gets_a_new_token_and_the_lost_one_is_revoked(sb: Sandbox) -> None:
    lost = agent_op().execute({})["token_id"]
    ClusterObjects(ClusterAccess(**KUBE)).delete("Secret", "astro-agent-token", NS)

    assert actions(agent_op().execute({})) == ["created", "created", "deleted"]
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert [t.id for t in sb.astro.live_agent_tokens(DEP)] != [lost] and len(sb.astro.live_agent_tokens(DEP)) == 1


def test_token_value_appears_in_no_log_xcom_or_template_field(
    sb: Sandbox, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    op = agent_op()

    result = op.execute({})

    token = agent_token_in_secret(sb)
    seen = caplog.text + "".join(capsys.readouterr()) + json.dumps(result)
    seen += json.dumps({field: str(getattr(op, field)) for field in op.template_fields})
    assert "k8s:Secret/astro-agents/astro-agent-token: created" in seen  # the capture did see the task's log
    assert token not in seen and base64.b64encode(token.encode()).decode() not in seen


def test_agent_token_dry_run_creates_no_token_and_no_secret(sb: Sandbox) -> None:
    result = agent_op(dry_run=True).execute({})

    assert actions(result) == ["create", "create"]
    assert (secret(sb), sb.astro.live_agent_tokens(DEP)) == (None, [])


def test_agent_token_dry_run_before_the_namespace_exists_plans_a_create(sb: Sandbox) -> None:
    result = agent_op(namespace="not-yet-created", dry_run=True, restart_selector="app=astro-agent").execute({})

    assert actions(result) == ["create", "create"]
    assert sb.astro.mutating_calls == []


def test_failed_secret_write_revokes_the_token_it_just_created(sb: Sandbox) -> None:
    with pytest.raises(ClusterError, match="does not exist"):
        agent_op(namespace="no-such-namespace").execute({})

    assert sb.astro.live_agent_tokens(DEP) == []


# -- rotation ----------------------------------------------------------------------------------------


def test_rotate_defers_on_the_rollout_of_the_restarted_deployments(sb: Sandbox) -> None:
    old_id, deferred = rotate_until_deferred(sb)

    assert isinstance(deferred.trigger, RolloutTrigger)
    _, kwargs = deferred.trigger.serialize()
    assert (kwargs["namespace"], kwargs["deployments"]) == (NS, ["astro-agent-worker"])
    assert kwargs["access"]["kubernetes_conn_id"] == "kubernetes_default"
    assert kwargs["return_value"]["old_token_id"] == old_id
    assert deferred.method_name == "execute_complete"


def test_rotate_replaces_the_secret_in_one_write_and_restarts_the_agents(sb: Sandbox) -> None:
    old_id, _ = rotate_until_deferred(sb)

    assert kube_writes(sb) == [("PUT", "Secret"), ("PATCH", "Deployment")]  # never deleted, never empty
    assert restarted_at(sb) is not None
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert old_id in {t.id for t in sb.astro.live_agent_tokens(DEP)}  # old pods keep working meanwhile


def test_rollout_trigger_fires_success_once_the_deployments_are_ready(sb: Sandbox) -> None:
    _, deferred = rotate_until_deferred(sb)

    event = first_event(deferred.trigger)

    assert event["status"] == "success"


def test_rollout_trigger_reports_an_error_when_pods_never_become_ready(sb: Sandbox) -> None:
    _, deferred = rotate_until_deferred(sb)
    sb.kube.faults.never_ready(namespace=NS, name="astro-agent-worker")
    _, kwargs = deferred.trigger.serialize()

    event = first_event(RolloutTrigger(**{**kwargs, "deadline": time.time() + 1.0}))

    assert event["status"] == "failed"
    assert "astro-agent-worker" in event["unready"]


def test_execute_complete_revokes_the_old_token_after_the_rollout(sb: Sandbox) -> None:
    old_id, deferred = rotate_until_deferred(sb)
    op = agent_op(rotate=True, restart_selector="app=astro-agent")

    result = op.execute_complete({}, first_event(deferred.trigger))

    assert old_id in {t.id for t in sb.astro.revoked_tokens}
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert actions(result) == ["created", "updated", "updated", "deleted"]


def test_rotate_without_a_triggerer_waits_for_the_rollout_in_the_task_then_revokes_the_old_token(sb: Sandbox) -> None:
    agent_deployment(sb)
    old_id = agent_op().execute({})["token_id"]

    result = agent_op(rotate=True, restart_selector="app=astro-agent", deferrable=False).execute({})

    assert actions(result) == ["created", "updated", "updated", "deleted"]
    assert old_id in {t.id for t in sb.astro.revoked_tokens}
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)


def test_execute_complete_with_a_failed_event_raises_and_keeps_the_old_token(sb: Sandbox) -> None:
    old_id, _ = rotate_until_deferred(sb)
    op = agent_op(rotate=True, restart_selector="app=astro-agent")

    with pytest.raises(ClusterError, match="was NOT revoked"):
        op.execute_complete({}, {"status": "failed", "message": "rollout timed out",
                                 "unready": {"astro-agent-worker": "0/1 ready"},
                                 "return_value": {"old_token_id": old_id}})

    assert old_id in {t.id for t in sb.astro.live_agent_tokens(DEP)}


def test_rotate_whose_selector_matches_no_agent_keeps_the_old_token_and_fails_with_the_reason(sb: Sandbox) -> None:
    """A selector that matches nothing on the real chart must not revoke the token running agents hold."""
    agent_deployment(sb)
    old_id = agent_op().execute({})["token_id"]

    with pytest.raises(ClusterError, match=r"matched restart_selector 'release=another-release'.*was NOT revoked"):
        agent_op(rotate=True, restart_selector="release=another-release").execute({})

    assert old_id in {t.id for t in sb.astro.live_agent_tokens(DEP)}
    assert restarted_at(sb) is None


def test_a_rotation_killed_during_the_rollout_wait_is_finished_by_the_next_run(sb: Sandbox) -> None:
    """The old token's id is kept on the Secret, so a re-run waits for the rollout, then revokes it."""
    old_id, _ = rotate_until_deferred(sb)  # the task is killed while deferred: execute_complete never runs
    sb.kube.faults.never_ready(namespace=NS, name="astro-agent-worker")

    with pytest.raises(TaskDeferred) as deferred:
        agent_op(restart_selector="app=astro-agent", deferrable=True).execute({})

    assert old_id in {t.id for t in sb.astro.live_agent_tokens(DEP)}  # agents not rolled out may still hold it
    sb.kube.faults.clear()
    result = agent_op(restart_selector="app=astro-agent").execute_complete({}, first_event(deferred.value.trigger))
    assert old_id in {t.id for t in sb.astro.revoked_tokens}
    assert actions(result) == ["unchanged", "unchanged", "deleted"]


def test_teardown_after_a_killed_rotation_revokes_the_replaced_token_named_on_the_secret(sb: Sandbox) -> None:
    """Found by the Secret's annotation, not by its name (here the teardown's token_name is another)."""
    old_id, _ = rotate_until_deferred(sb)

    RevokeAgentTokenOperator(task_id="revoke", deployment_id=DEP, namespace=NS, environment=ENV,
                             token_name="renamed", **KUBE).execute({})

    assert sb.astro.live_agent_tokens(DEP) == [] and old_id in {t.id for t in sb.astro.revoked_tokens}


def test_rotate_without_a_restart_target_is_refused(sb: Sandbox) -> None:
    with pytest.raises(ConfigError, match="restart_selector"):
        agent_op(rotate=True).execute({})


# -- registry pull secret ----------------------------------------------------------------------------


def test_registry_secret_holds_a_deployment_admin_token_for_user_cli(sb: Sandbox) -> None:
    result = registry_op().execute({})

    (token,) = sb.astro.live_api_tokens(DEP)
    login = registry_login(sb)
    assert secret(sb, "astro-registry")["type"] == "kubernetes.io/dockerconfigjson"
    assert (login["username"], login["password"], token.role) == ("cli", token.value, "DEPLOYMENT_ADMIN")
    assert result["token_id"] == token.id


def test_registry_secret_second_run_makes_zero_writes(sb: Sandbox) -> None:
    registry_op().execute({})
    sb.kube.reset_counters()
    sb.astro.clear_calls()

    assert actions(registry_op().execute({})) == ["unchanged", "unchanged"]
    assert (kube_writes(sb), sb.astro.mutating_calls) == ([], [])


def test_registry_rotate_replaces_the_token_then_revokes_the_old_one(sb: Sandbox) -> None:
    old_id = registry_op().execute({})["token_id"]
    sb.kube.reset_counters()

    result = registry_op(rotate=True).execute({})

    (token,) = sb.astro.live_api_tokens(DEP)
    assert (token.id, registry_login(sb)["password"]) == (result["token_id"], token.value)
    assert old_id in {t.id for t in sb.astro.revoked_tokens}
    assert kube_writes(sb) == [("PUT", "Secret")]


# -- teardown ----------------------------------------------------------------------------------------


def test_revoke_agent_token_revokes_the_token_our_secret_holds(sb: Sandbox) -> None:
    token_id = agent_op().execute({})["token_id"]

    result = RevokeAgentTokenOperator(task_id="revoke", deployment_id=DEP, namespace=NS, environment=ENV,
                                      **KUBE).execute({})

    assert actions(result) == ["deleted"]
    assert token_id in {t.id for t in sb.astro.revoked_tokens}


def test_revoke_of_an_already_revoked_token_is_absent(sb: Sandbox) -> None:
    token_id = registry_op().execute({})["token_id"]
    AstroHook().delete_api_token(token_id)

    result = RevokeRegistryTokenOperator(task_id="revoke", deployment_id=DEP, namespace=NS, environment=ENV,
                                         **KUBE).execute({})

    assert actions(result) == ["absent"]


# -- Remote Execution settings ------------------------------------------------------------------------


def settings_op(**kwargs: Any) -> UpdateRemoteExecutionSettingsOperator:
    options = {"allowed_ip_address_ranges": ["203.0.113.0/24", "198.51.100.7/32"],
               "task_log_bucket": "s3://sandbox-logs/logs", **kwargs}
    return UpdateRemoteExecutionSettingsOperator(task_id="settings", deployment_id=DEP, **options)


def test_remote_execution_settings_are_updated_to_the_given_values(sb: Sandbox) -> None:
    result = settings_op().execute({})

    deployment = sb.astro.deployment(DEP)
    assert actions(result) == ["updated"]
    assert sorted(deployment.allowed_ip_address_ranges) == ["198.51.100.7/32", "203.0.113.0/24"]
    assert deployment.task_log_bucket == "s3://sandbox-logs/logs"
    assert result["remote_api_url"] == deployment.remote_api_url


def test_equal_remote_execution_settings_make_zero_writes(sb: Sandbox) -> None:
    settings_op().execute({})
    sb.astro.clear_calls()

    result = settings_op(allowed_ip_address_ranges=["198.51.100.7/32", "203.0.113.0/24"]).execute({})

    assert (actions(result), sb.astro.mutating_calls) == (["unchanged"], [])


def test_included_ranges_are_added_to_others_and_excluded_ones_taken_out(sb: Sandbox) -> None:
    settings_op(allowed_ip_address_ranges=["192.0.2.0/24"], task_log_bucket=None).execute({})
    include = ["203.0.113.0/24", ["198.51.100.7"]]  # the nested list is what an egress_ips XCom renders to

    added = settings_op(allowed_ip_address_ranges=None, include_allowed_ip_address_ranges=include,
                        task_log_bucket=None).execute({})
    again = settings_op(allowed_ip_address_ranges=None, include_allowed_ip_address_ranges=include,
                        task_log_bucket=None).execute({})
    assert sorted(sb.astro.deployment(DEP).allowed_ip_address_ranges) == [
        "192.0.2.0/24", "198.51.100.7/32", "203.0.113.0/24"]
    removed = settings_op(allowed_ip_address_ranges=None, exclude_allowed_ip_address_ranges=include,
                          task_log_bucket=None).execute({})

    assert (actions(added), actions(again), actions(removed)) == (["updated"], ["unchanged"], ["updated"])
    assert sb.astro.deployment(DEP).allowed_ip_address_ranges == ["192.0.2.0/24"]


def test_exact_and_included_ranges_together_are_refused_before_any_call(sb: Sandbox) -> None:
    with pytest.raises(ConfigError, match="not both"):
        settings_op(include_allowed_ip_address_ranges=["192.0.2.0/24"]).execute({})
    assert sb.astro.calls == []


def test_remote_execution_settings_dry_run_changes_nothing(sb: Sandbox) -> None:
    result = settings_op(dry_run=True).execute({})

    assert (actions(result), sb.astro.mutating_calls) == (["update"], [])
    assert sb.astro.deployment(DEP).allowed_ip_address_ranges == []


# -- Astro API faults ----------------------------------------------------------------------------------


def test_astro_500_is_retried_with_a_warning_and_succeeds(sb: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    sb.astro.fail("*agent-tokens*", status=500, count=1, method="GET")  # a read: safe to send again

    result = agent_op().execute({})

    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert result["token_id"]
    assert "answered 500; retry 1 of 4" in caplog.text


@pytest.mark.parametrize("status", [502, 504])
def test_a_lost_create_answer_leaves_one_live_token_not_an_orphan(sb: Sandbox, status: int) -> None:
    sb.astro.lose_answers("*agent-tokens", status=status)
    sb.astro.lose_answers("*/tokens", status=status)

    agent = agent_op().execute({})
    registry = registry_op().execute({})

    assert [t.id for t in sb.astro.live_agent_tokens(DEP)] == [agent["token_id"]]
    assert [t.id for t in sb.astro.live_api_tokens(DEP)] == [registry["token_id"]]
    assert sb.astro.is_live_agent_token(agent_token_in_secret(sb), DEP)
    assert len(sb.astro.revoked_tokens) == 2  # what each lost answer had made


def test_a_rotation_whose_create_answer_is_lost_keeps_the_token_in_use(sb: Sandbox) -> None:
    old_id = agent_op().execute({})["token_id"]
    sb.astro.lose_answers("*agent-tokens")

    result = agent_op(rotate=True, restart_deployments=["astro-agent-worker"], revoke_after_rollout=False).execute({})

    assert [t.id for t in sb.astro.live_agent_tokens(DEP)] == [result["token_id"]]
    assert old_id in {t.id for t in sb.astro.revoked_tokens} and result["token_id"] != old_id


def test_a_create_that_times_out_is_not_reported_as_an_unreachable_host(sb: Sandbox) -> None:
    from remote_agents.errors import AstroUncertainCreateError
    from remote_agents.hooks.astro import AstroHook

    sb.astro.add_latency(1.5)
    hook = AstroHook("astro_default", timeout=0.5)

    with pytest.raises(AstroUncertainCreateError, match="did not answer within 0 s|did not answer within 1 s"):
        hook.create_agent_token(DEP, name="probe")
    with pytest.raises(AstroApiError, match="did not answer within") as read:
        hook.get_deployment(DEP)
    assert "cannot reach" not in str(read.value)


def test_refused_api_token_names_the_connection(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = json.loads(sb.env()["AIRFLOW_CONN_ASTRO_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_ASTRO_DEFAULT", json.dumps({**conn, "password": "not-the-right-token-123"}))

    with pytest.raises(AstroApiError, match="403.*connection 'astro_default'") as raised:
        agent_op().execute({})

    assert "not-the-right-token-123" not in str(raised.value)


def test_unauthorized_answer_names_the_connection(sb: Sandbox) -> None:
    sb.astro.fail("*agent-tokens*", status=401, count=1)

    with pytest.raises(AstroApiError, match="401.*connection 'astro_default'"):
        agent_op().execute({})


def test_agent_token_limit_suggests_revoking_old_tokens(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb.astro, "max_agent_tokens", 0)

    with pytest.raises(AstroApiError, match="maximum.*revoke unused"):
        agent_op().execute({})


def test_hook_test_connection_reports_success(sb: Sandbox) -> None:
    ok, message = AstroHook().test_connection()

    assert ok, message
