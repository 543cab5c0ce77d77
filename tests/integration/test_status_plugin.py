"""The Environments page's plugin against a real Airflow 3: the stand-in, running the recorded-shape Dags
of ``test_status_cli``, with the worktree's provider (and so its plugin) loaded by the api-server.

Airflow finds the plugin through the ``airflow.plugins`` entry point pyproject.toml declares. Until
the virtualenv's install of the provider is redone it lacks that entry point, so ``plugin_path``
declares it, from pyproject.toml, in a metadata folder of its own on PYTHONPATH.

The app is tested both mounted in that api-server (the provider's plugin entry as Airflow loads it)
and in-process with TestClient, its data source being the same api-server's REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from remote_agents.plugin import URL_PREFIX, create_app
from sandbox.standin import AgentStandIn
from tests.integration.test_status_cli import BOOTSTRAP, HEALTH, RECORDED_DAGS, RUN_TIMEOUT

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
WORKTREE_PATH = f"{ROOT}:{ROOT / 'provider'}"  # the worktree's provider, not the editable install's


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH for Airflow processes that load the worktree's provider and its plugin."""
    installed = [e for e in distribution("airflow-provider-remote-agents").entry_points if e.group == "airflow.plugins"]
    if installed:
        return WORKTREE_PATH
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    folder = tmp_path_factory.mktemp("plugin-metadata")
    info = folder / "remote_agents_worktree_plugin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: remote-agents-worktree-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[airflow.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    return f"{WORKTREE_PATH}:{folder}"


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    shutil.copy(ROOT / "include" / "environments" / "sandbox.yaml", folder)
    shutil.copy(ROOT / "include" / "environments" / "tutorial.yaml", folder)  # no Dag of it runs there
    (folder / "bad.yaml").write_text("name: bad\nnamepsace: x\n")
    return folder


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, specs: Path, plugin_path: str) -> Iterator[AgentStandIn]:
    """The stand-in with a bootstrap and a (failing) health run of `sandbox` done."""
    state = tmp_path_factory.mktemp("plugin-airflow")
    dags = state / "dags"
    dags.mkdir()
    (dags / "recorded_environment_dags.py").write_text(textwrap.dedent(RECORDED_DAGS))
    values = {"xcomBackend": "airflow.sdk.execution_time.xcom.BaseXCom", "secretBackend": "",
              "workers": [{"name": "default", "queues": "default"}]}
    extra = {"PYTHONPATH": plugin_path, "REMOTE_AGENTS_ENVIRONMENTS": str(specs)}
    with AgentStandIn(state, dags, values, aws_env={}, extra_env=extra, parallelism=4) as standin:
        with standin.client() as client:
            for dag_id in (BOOTSTRAP, HEALTH):
                client.wait_for_dag(dag_id, timeout=30)
            runs = [(BOOTSTRAP, client.trigger(BOOTSTRAP, {"dry_run": False})), (HEALTH, client.trigger(HEALTH))]
            states = [client.wait(dag_id, run_id, RUN_TIMEOUT) for dag_id, run_id in runs]
        assert states == ["success", "failed"], states
        yield standin


@pytest.fixture()
def app(airflow: AgentStandIn, specs: Path) -> TestClient:
    return TestClient(create_app(lambda: airflow.url, lambda: specs))


def _by_name(statuses: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(status["name"]): status for status in statuses}


def test_status_json_for_a_readable_environment(app: TestClient, airflow: AgentStandIn) -> None:
    response = app.get("/status.json", headers={"Authorization": f"Bearer {airflow.api_token()}"})

    assert response.status_code == 200, response.text
    statuses = _by_name(response.json())
    assert set(statuses) == {"sandbox", "tutorial", "bad"}
    sandbox = statuses["sandbox"]
    assert sandbox["bootstrap"]["counts"] == {"created": 1, "unchanged": 1}  # type: ignore[index]
    cells = {cell["check"]: cell for cell in sandbox["health"]["checks"]}  # type: ignore[index]
    assert cells["xcom"]["status"] == "red" and "access denied" in cells["xcom"]["findings"][0]
    assert statuses["tutorial"]["never_bootstrapped"] and statuses["bad"]["error"]


def test_the_ui_cookie_is_forwarded_like_a_bearer_token(app: TestClient, airflow: AgentStandIn) -> None:
    app.cookies.set("_token", airflow.api_token())

    assert app.get("/status.json").status_code == 200


def test_no_or_a_refused_credential_gets_no_data(app: TestClient) -> None:
    missing = app.get("/status.json")
    refused = app.get("/status.json", headers={"Authorization": "Bearer not-a-jwt"})

    assert missing.status_code == 401
    assert refused.status_code in (401, 403) and "not-a-jwt" not in refused.text
    assert "environments" not in missing.text + refused.text


def test_the_page_has_the_table_scaffold(app: TestClient) -> None:
    page = app.get("/").text

    assert '<table id="environments">' in page and "<th>xcom</th>" in page and "status.json" in page


def test_the_api_server_mounts_the_plugin(airflow: AgentStandIn) -> None:
    headers = {"Authorization": f"Bearer {airflow.api_token()}"}
    plugins = httpx.get(f"{airflow.url}/api/v2/plugins", headers=headers, timeout=30).json()["plugins"]
    (plugin,) = [p for p in plugins if p["name"] == "remote_agents"]
    assert plugin["external_views"][0]["href"] == f"{URL_PREFIX}/"

    response = httpx.get(f"{airflow.url}{URL_PREFIX}/status.json", headers=headers, timeout=30)

    assert response.status_code == 200, response.text
    assert _by_name(response.json())["sandbox"]["chart_version_installed"] == "9.9.9"
    assert httpx.get(f"{airflow.url}{URL_PREFIX}/status.json", timeout=30).status_code == 401


def test_airflow_plugins_lists_the_plugin(tmp_path: Path, plugin_path: str) -> None:
    env = {"PATH": os.environ["PATH"], "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": plugin_path,
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow = str(Path(sys.executable).with_name("airflow"))

    listed = subprocess.run([airflow, "plugins", "--output", "json"], env=env, capture_output=True, text=True,
                            timeout=60, check=True)

    names = [plugin["name"] for plugin in json.loads(listed.stdout)]
    assert "remote_agents" in names
