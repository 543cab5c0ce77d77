"""Every AstroHook method against the Astro emulator held to the published v1 document.

If the document and the hook disagree (a field name, a required field, a path, a permission), a
case here fails: the emulator answers what the document says the real API answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from remote_agents.errors import AstroApiError
from remote_agents.hooks.astro import AstroHook
from sandbox.astro import AstroEmulator, Deployment
from sandbox.astro_contract import DOCUMENT_PATH, document

pytestmark = pytest.mark.sandbox

ORG = "clorgcontract000000000000"
DEP = "cldepcontract000000000000"
TOKEN = "contract-org-owner-token"
NO_PERMISSIONS = "contract-token-without-permissions"


@pytest.fixture(scope="module")
def astro() -> Iterator[AstroEmulator]:
    seeded = Deployment(id=DEP, name="remote", environment_variables={"SECRET_KEY": ("s3cr3t", True),
                                                                       "PLAIN": ("1", False)})
    with AstroEmulator(api_token=TOKEN, organization_id=ORG, deployments=[seeded],
                       scoped_tokens={NO_PERMISSIONS: []}) as emulator:
        yield emulator


@pytest.fixture
def connect(astro: AstroEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], AstroHook]]:
    astro.reset()
    hooks: list[AstroHook] = []

    def hook(token: str = TOKEN) -> AstroHook:
        conn = {"conn_type": "astro", "host": astro.url, "password": token, "extra": {"organization_id": ORG}}
        monkeypatch.setenv(f"AIRFLOW_CONN_ASTRO_CONTRACT_{len(hooks)}", json.dumps(conn))
        hooks.append(AstroHook(f"astro_contract_{len(hooks)}", max_attempts=1))
        return hooks[-1]

    yield hook
    for made in hooks:
        made.close()
    assert astro.contract_problems == []


def _agent_token(hook: AstroHook) -> str:
    return hook.create_agent_token(DEP, name="agents", expiry_days=30)["id"]


def _api_token(hook: AstroHook) -> str:
    return hook.create_deployment_token(DEP, name="registry", expiry_days=30)["id"]


# method name -> (call it, the document's operationIds it sends)
CASES: dict[str, tuple[Callable[[AstroHook], Any], set[str]]] = {
    "test_connection": (lambda h: h.test_connection(), {"ListDeployments"}),
    "get_deployment": (lambda h: h.get_deployment(DEP), {"GetDeployment"}),
    "get_remote_api_url": (lambda h: h.get_remote_api_url(DEP), {"GetDeployment"}),
    "update_remote_execution": (
        lambda h: h.update_remote_execution(DEP, allowed_ip_address_ranges=["203.0.113.7/32"],
                                            task_log_bucket="s3://logs/tasks"),
        {"GetDeployment", "UpdateDeployment"},
    ),
    "list_agent_tokens": (lambda h: h.list_agent_tokens(DEP), {"ListAgentTokens"}),
    "create_agent_token": (_agent_token, {"CreateAgentToken"}),
    "get_agent_token": (lambda h: h.get_agent_token(DEP, _agent_token(h)), {"CreateAgentToken", "GetAgentToken"}),
    "delete_agent_token": (lambda h: h.delete_agent_token(DEP, _agent_token(h)),
                           {"CreateAgentToken", "DeleteAgentToken"}),
    "create_deployment_token": (_api_token, {"CreateApiToken"}),
    "list_deployment_tokens": (lambda h: h.list_deployment_tokens(DEP), {"ListApiTokens"}),
    "get_api_token": (lambda h: h.get_api_token(_api_token(h)), {"CreateApiToken", "GetApiToken"}),
    "delete_api_token": (lambda h: h.delete_api_token(_api_token(h)), {"CreateApiToken", "DeleteApiToken"}),
}


def test_the_pinned_document_is_the_published_one_and_valid() -> None:
    readme = (DOCUMENT_PATH.parent / "README.md").read_text()
    pinned = re.search(r"sha256 of `astro-platform-api-v1.yaml`: `([0-9a-f]{64})`", readme)
    assert pinned and hashlib.sha256(DOCUMENT_PATH.read_bytes()).hexdigest() == pinned.group(1)
    from openapi_spec_validator import validate

    validate(document())


def test_every_public_hook_method_has_a_contract_case() -> None:
    own = {name for name, member in vars(AstroHook).items()
           if callable(member) and not name.startswith("_") and name not in _PLUMBING}
    assert own == set(CASES)


_PLUMBING = {"get_ui_field_behaviour", "get_conn", "close", "request"}


@pytest.mark.parametrize("method", sorted(CASES))
def test_hook_method_is_accepted_by_the_document(method: str, connect: Callable[..., AstroHook],
                                                 astro: AstroEmulator) -> None:
    call, _ = CASES[method]
    call(connect())
    refused = [c for c in astro.calls if c.status >= 400]
    assert refused == [], f"{method}: the API document refuses {refused}"


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_token_without_the_permission_is_told_which_one(method: str, connect: Callable[..., AstroHook]) -> None:
    """The 403 names the document's x-permission of the operation that was refused."""
    call, operations = CASES[method]
    try:
        connected, message = call(connect(NO_PERMISSIONS))  # test_connection answers instead of raising
        assert not connected
    except AstroApiError as refused:
        assert refused.status_code == 403
        message = str(refused)
    needed = {_permission(operation) for operation in operations}
    assert any(permission in message for permission in needed), message


def test_update_keeps_every_other_setting_and_secret(connect: Callable[..., AstroHook], astro: AstroEmulator) -> None:
    before = astro.deployment(DEP)
    connect().update_remote_execution(DEP, allowed_ip_address_ranges=["203.0.113.7/32"])
    after = astro.deployment(DEP)
    assert after.allowed_ip_address_ranges == ["203.0.113.7/32"]
    assert after.environment_variables == before.environment_variables
    for name in ("name", "description", "executor", "scheduler_size", "is_high_availability", "is_cicd_enforced",
                 "is_dag_deploy_enabled", "workload_identity", "task_log_bucket", "contact_emails"):
        assert getattr(after, name) == getattr(before, name), name


def _permission(operation_id: str) -> str:
    for path in document()["paths"].values():
        for operation in path.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return operation["x-permission"][0]["action"]
    raise KeyError(operation_id)


def test_the_cases_name_only_operations_of_the_document() -> None:
    for _, operations in CASES.values():
        for operation in operations:
            assert _permission(operation)
