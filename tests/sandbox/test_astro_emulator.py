from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.astro import AstroEmulator, Deployment

pytestmark = pytest.mark.sandbox

API_TOKEN = "sandbox-org-api-token"
ORG = "org-sandbox"
DEP = "dep-remote"
OTHER_DEP = "dep-other"


@pytest.fixture(scope="module")
def astro() -> Iterator[AstroEmulator]:
    deployments = [Deployment(id=DEP, name="remote", remote_api_url="http://127.0.0.1:8089"), {"id": OTHER_DEP}]
    with AstroEmulator(api_token=API_TOKEN, organization_id=ORG, deployments=deployments) as emulator:
        yield emulator


@pytest.fixture
def api(astro: AstroEmulator) -> Iterator[httpx.Client]:
    """A client of the emulator; every response it got must match the document's response schema."""
    astro.reset()
    with httpx.Client(base_url=astro.url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client
    assert astro.contract_problems == []


def agent_tokens_path(deployment: str = DEP) -> str:
    return f"/organizations/{ORG}/deployments/{deployment}/agent-tokens"


def test_request_without_token_is_401_with_error_shape(astro: AstroEmulator) -> None:
    response = httpx.get(f"{astro.url}/organizations/{ORG}/deployments/{DEP}")
    assert response.status_code == 401
    assert set(response.json()) == {"message", "statusCode", "requestId"}
    assert response.json()["statusCode"] == 401


def test_request_with_wrong_token_is_403(astro: AstroEmulator) -> None:
    response = httpx.get(f"{astro.url}/organizations/{ORG}/deployments/{DEP}", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        f"/organizations/other-org/deployments/{DEP}",
        f"/organizations/{ORG}/deployments/unknown",
        f"/organizations/{ORG}/deployments/{DEP}/agent-tokens/unknown",
        f"/organizations/{ORG}/tokens/unknown",
    ],
)
def test_unknown_ids_are_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


def test_deployment_reports_remote_execution(api: httpx.Client) -> None:
    deployment = api.get(f"/organizations/{ORG}/deployments/{DEP}").json()
    assert deployment["status"] == "HEALTHY"
    assert deployment["remoteExecution"]["remoteApiUrl"] == "http://127.0.0.1:8089"
    assert deployment["namespace"]
    listed = api.get(f"/organizations/{ORG}/deployments").json()
    assert {d["id"] for d in listed["deployments"]} == {DEP, OTHER_DEP}


def full_update(api: httpx.Client, **changes: object) -> dict[str, object]:
    """A complete UpdateDedicatedDeploymentRequest built from the Deployment as it is, plus changes."""
    current = api.get(f"/organizations/{ORG}/deployments/{DEP}").json()
    body: dict[str, object] = {key: current[key] for key in (
        "name", "workspaceId", "executor", "isCicdEnforced", "isDagDeployEnabled", "isHighAvailability",
        "schedulerSize")}
    body.update(type="DEDICATED", environmentVariables=[], remoteExecution={"enabled": True})
    body.update(changes)
    return body


def test_update_sets_remote_execution_fields(api: httpx.Client, astro: AstroEmulator) -> None:
    remote_execution = {
        "enabled": True,
        "allowedIpAddressRanges": ["10.0.0.0/16"],
        "taskLogBucket": "s3://logs",
        "taskLogUrlPattern": "s3://logs/{dag_id}",
    }
    response = api.post(f"/organizations/{ORG}/deployments/{DEP}", json=full_update(api, remoteExecution=remote_execution))
    assert response.status_code == 200
    assert response.json()["remoteExecution"]["allowedIpAddressRanges"] == ["10.0.0.0/16"]
    assert astro.deployment(DEP).task_log_bucket == "s3://logs"


def test_update_is_a_full_replacement(api: httpx.Client, astro: AstroEmulator) -> None:
    with_ranges = {"enabled": True, "allowedIpAddressRanges": ["10.0.0.0/16"]}
    api.post(f"/organizations/{ORG}/deployments/{DEP}", json=full_update(api, remoteExecution=with_ranges))
    api.post(f"/organizations/{ORG}/deployments/{DEP}", json=full_update(api))
    assert astro.deployment(DEP).allowed_ip_address_ranges == []


def test_partial_update_is_400_naming_every_missing_field(api: httpx.Client) -> None:
    response = api.post(f"/organizations/{ORG}/deployments/{DEP}", json={"type": "DEDICATED",
                                                                         "remoteExecution": {"enabled": True}})
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"message", "statusCode", "requestId", "fieldErrors"}
    assert {e["field"] for e in error["fieldErrors"]} == {
        "environmentVariables", "executor", "isCicdEnforced", "isDagDeployEnabled", "isHighAvailability", "name",
        "schedulerSize", "workspaceId"}
    assert {e["code"] for e in error["fieldErrors"]} == {"required"}


def test_update_without_the_type_discriminator_is_400(api: httpx.Client) -> None:
    response = api.post(f"/organizations/{ORG}/deployments/{DEP}", json={"remoteExecution": {"enabled": True}})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["fieldErrors"]] == ["type"]


def test_secret_variable_without_value_keeps_its_value_and_a_new_one_is_refused(
        api: httpx.Client, astro: AstroEmulator) -> None:
    first = [{"key": "API_KEY", "isSecret": True, "value": "s3cr3t"}]
    assert api.post(f"/organizations/{ORG}/deployments/{DEP}",
                    json=full_update(api, environmentVariables=first)).status_code == 200
    listed = api.get(f"/organizations/{ORG}/deployments/{DEP}").json()["environmentVariables"]
    assert [(v["key"], "value" in v) for v in listed] == [("API_KEY", False)]
    kept = [{"key": "API_KEY", "isSecret": True}]
    assert api.post(f"/organizations/{ORG}/deployments/{DEP}",
                    json=full_update(api, environmentVariables=kept)).status_code == 200
    assert astro.deployment(DEP).environment_variables == {"API_KEY": ("s3cr3t", True)}
    new = [{"key": "OTHER", "isSecret": True}]
    refused = api.post(f"/organizations/{ORG}/deployments/{DEP}", json=full_update(api, environmentVariables=new))
    assert refused.status_code == 400
    assert refused.json()["fieldErrors"][0]["field"] == "environmentVariables.0.value"


def test_unknown_field_is_400_with_the_field_named(api: httpx.Client) -> None:
    response = api.post(agent_tokens_path(), json={"name": "agents", "expiresInDays": 3})
    assert response.status_code == 400
    assert response.json()["fieldErrors"] == [
        {"code": "additionalProperties", "field": "expiresInDays",
         "message": "Additional properties are not allowed ('expiresInDays' was unexpected)"}]


def test_token_request_missing_scope_is_400(api: httpx.Client) -> None:
    request = {"name": "registry", "entityId": DEP, "role": "DEPLOYMENT_ADMIN"}
    response = api.post(f"/organizations/{ORG}/tokens", json=request)
    assert response.status_code == 400
    assert [(e["code"], e["field"]) for e in response.json()["fieldErrors"]] == [("required", "scope")]


def test_unknown_path_is_404_and_wrong_method_405(api: httpx.Client) -> None:
    assert api.get(f"/organizations/{ORG}/deployments/{DEP}/remote-agents").status_code == 404
    wrong_method = api.put(f"/organizations/{ORG}/deployments/{DEP}", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["statusCode"] == 405


def test_out_of_range_query_parameter_is_400(api: httpx.Client) -> None:
    response = api.get(agent_tokens_path(), params={"limit": 5000})
    assert response.status_code == 400
    assert response.json()["fieldErrors"][0]["field"] == "limit"


def test_agent_token_value_is_only_in_the_create_response(api: httpx.Client, astro: AstroEmulator) -> None:
    created = api.post(agent_tokens_path(), json={"name": "agents"}).json()
    assert created["token"]
    fetched = api.get(f"{agent_tokens_path()}/{created['id']}").json()
    listed = api.get(agent_tokens_path()).json()["tokens"]
    assert "token" not in fetched
    assert "lastUsedAt" not in fetched
    assert [t["id"] for t in listed] == [created["id"]]
    assert all("token" not in t for t in listed)
    assert astro.is_live_agent_token(created["token"], DEP)


def test_validating_an_agent_token_sets_last_used_at(api: httpx.Client, astro: AstroEmulator) -> None:
    created = api.post(agent_tokens_path(), json={"name": "agents"}).json()
    admin = astro.url.removesuffix("/v1") + "/sandbox"
    reply = httpx.post(f"{admin}/agent-tokens/validate", json={"token": created["token"]})
    assert reply.json() == {"valid": True, "deploymentId": DEP, "tokenId": created["id"]}
    assert api.get(f"{agent_tokens_path()}/{created['id']}").json()["lastUsedAt"] is not None


def test_deleted_agent_token_is_revoked(api: httpx.Client, astro: AstroEmulator) -> None:
    created = api.post(agent_tokens_path(), json={"name": "agents"}).json()
    assert api.delete(f"{agent_tokens_path()}/{created['id']}").status_code == 204
    assert api.get(f"{agent_tokens_path()}/{created['id']}").status_code == 404
    assert not astro.is_live_agent_token(created["token"])
    assert [t.id for t in astro.revoked_tokens] == [created["id"]]


def test_51st_agent_token_is_refused_with_400(api: httpx.Client, astro: AstroEmulator) -> None:
    for number in range(50):
        assert api.post(agent_tokens_path(), json={"name": f"t{number}"}).status_code == 200
    refused = api.post(agent_tokens_path(), json={"name": "one-too-many"})
    assert refused.status_code == 400
    assert "50" in refused.json()["message"]
    assert api.post(agent_tokens_path(OTHER_DEP), json={"name": "other"}).status_code == 200
    assert len(astro.live_agent_tokens(DEP)) == 50


def test_deployment_api_token_create_list_rotate_delete(api: httpx.Client, astro: AstroEmulator) -> None:
    request = {"name": "registry", "scope": "DEPLOYMENT", "entityId": DEP, "role": "DEPLOYMENT_ADMIN"}
    created = api.post(f"/organizations/{ORG}/tokens", json=request).json()
    listed = api.get(f"/organizations/{ORG}/tokens", params={"deploymentId": DEP}).json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0]

    rotated = api.post(f"/organizations/{ORG}/tokens/{created['id']}/rotate").json()
    assert rotated["token"] != created["token"]
    assert [t.value for t in astro.live_api_tokens(DEP)] == [rotated["token"]]

    assert api.delete(f"/organizations/{ORG}/tokens/{created['id']}").status_code == 204
    assert api.get(f"/organizations/{ORG}/tokens").json()["tokens"] == []
    assert {t.value for t in astro.revoked_tokens} == {created["token"], rotated["token"]}


def test_deployment_api_token_for_unknown_deployment_is_404(api: httpx.Client) -> None:
    request = {"name": "registry", "scope": "DEPLOYMENT", "entityId": "nope", "role": "DEPLOYMENT_ADMIN"}
    assert api.post(f"/organizations/{ORG}/tokens", json=request).status_code == 404


def test_injected_500s_hit_the_matching_path_then_stop(api: httpx.Client, astro: AstroEmulator) -> None:
    astro.fail("/v1/organizations/*/deployments/*/agent-tokens", status=500, count=2, method="POST")
    statuses = [api.post(agent_tokens_path(), json={"name": "t"}).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert api.get(agent_tokens_path()).status_code == 200


def test_faults_can_be_injected_over_the_admin_endpoint(api: httpx.Client, astro: AstroEmulator) -> None:
    admin = astro.url.removesuffix("/v1") + "/sandbox"
    httpx.post(f"{admin}/faults/errors", json={"path": f"/v1/organizations/{ORG}/deployments/{DEP}", "count": 1})
    assert api.get(f"/organizations/{ORG}/deployments/{DEP}").status_code == 500
    assert api.get(f"/organizations/{ORG}/deployments/{DEP}").status_code == 200


def test_request_log_marks_mutating_calls(api: httpx.Client, astro: AstroEmulator) -> None:
    api.get(f"/organizations/{ORG}/deployments/{DEP}")
    api.post(agent_tokens_path(), json={"name": "t"})
    assert [(c.method, c.mutating) for c in astro.calls] == [("GET", False), ("POST", True)]
    admin_log = httpx.get(astro.url.removesuffix("/v1") + "/sandbox/requests").json()["calls"]
    assert [c["mutating"] for c in admin_log] == [False, True]
    assert len(astro.mutating_calls) == 1


def test_admin_state_shows_live_and_revoked_tokens(api: httpx.Client, astro: AstroEmulator) -> None:
    kept = api.post(agent_tokens_path(), json={"name": "kept"}).json()
    dropped = api.post(agent_tokens_path(), json={"name": "dropped"}).json()
    api.delete(f"{agent_tokens_path()}/{dropped['id']}")
    state = httpx.get(astro.url.removesuffix("/v1") + "/sandbox/state").json()
    assert [t["token"] for t in state["agentTokens"]] == [kept["token"]]
    assert [t["token"] for t in state["revokedTokens"]] == [dropped["token"]]


def test_a_deployment_of_another_organization_is_only_found_under_it(astro: AstroEmulator, api: httpx.Client) -> None:
    astro.add_deployment({"id": "dep-b", "organization_id": "org-b"})
    try:
        token = api.post("/organizations/org-b/tokens", json={
            "name": "b", "scope": "DEPLOYMENT", "entityId": "dep-b", "role": "DEPLOYMENT_ADMIN"}).json()

        assert api.get("/organizations/org-b/deployments/dep-b").json()["organizationId"] == "org-b"
        assert api.get(f"/organizations/{ORG}/deployments/dep-b").status_code == 404
        assert [d["id"] for d in api.get("/organizations/org-b/deployments").json()["deployments"]] == ["dep-b"]
        assert api.get(f"/organizations/{ORG}/tokens/{token['id']}").status_code == 404
        assert token["id"] not in {t["id"] for t in api.get(f"/organizations/{ORG}/tokens").json()["tokens"]}
        astro.reset()
        assert api.get("/organizations/org-b/deployments/dep-b").status_code == 200  # seeded: survives a reset
    finally:
        astro.remove_deployment("dep-b")
    assert api.get("/organizations/org-b/deployments/dep-b").status_code == 404
