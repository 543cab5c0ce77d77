"""The Environments page: an Airflow 3 plugin that shows every environment's status in the Airflow UI.

A FastAPI app mounted in the api-server under ``/remote-agents`` serves ``status.json`` (the same
model as ``remote-agents status --output json``) and an HTML page that renders it, and an external
view puts the page into the UI's navigation. The app reads Airflow's own public REST API with the
caller's credentials, so Airflow's auth manager decides what each user sees: the rows of environments
whose Dags the user may not read are left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from remote_agents.environments import ENVIRONMENTS_VARIABLE, environment_files
from remote_agents.health.diagnose import CHECKS
from remote_agents.hooks.deployment import AirflowRestClient
from remote_agents.status import status_to_dict
from remote_agents.status_reader import StatusApiError, read_readable_status

URL_PREFIX = "/remote-agents"
TOKEN_COOKIE = "_token"  # where Airflow's UI keeps the user's JWT (airflow.api_fastapi.auth.managers)


def airflow_url() -> str:
    """This api-server's own base URL: the REST API the page reads goes through the same auth manager."""
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="") or ""
    if base_url.startswith(("http://", "https://")):
        return base_url.rstrip("/")
    host = conf.get("api", "host", fallback="") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a listen-on-all address is no address to call
    return f"http://{host}:{conf.get('api', 'port', fallback='8080')}{base_url.rstrip('/')}"


def specs_folder() -> Path:
    """``$REMOTE_AGENTS_ENVIRONMENTS``, else ``include/environments`` beside the Dags folder (Astro layout)."""
    from airflow.configuration import conf

    configured = os.environ.get(ENVIRONMENTS_VARIABLE)
    return Path(configured) if configured else Path(conf.get("core", "dags_folder")).parent / "include" / "environments"


def caller_token(request: Request) -> str:
    """The caller's bearer token, or the UI's cookie: the page's own fetch carries only the cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie
    raise HTTPException(401, "not authenticated: log in to Airflow, or pass a bearer token")


def create_app(url: Callable[[], str] = airflow_url, folder: Callable[[], Path] = specs_folder) -> FastAPI:
    """``url`` and ``folder`` are read per request: Airflow's configuration is not final at import time."""
    app = FastAPI(title="Remote agents", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/status.json")
    def status_json(request: Request) -> list[dict[str, Any]]:
        token = caller_token(request)
        base_url = url()
        _check_token(base_url, token)
        spec_folder = folder()
        environments = environment_files(spec_folder) if spec_folder.is_dir() else []
        try:
            with AirflowRestClient(base_url, token) as client:
                statuses = read_readable_status(client, environments, datetime.now(UTC))
        except StatusApiError as error:
            raise HTTPException(502, str(error)) from None
        return [status_to_dict(status) for status in statuses]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{CHECK_HEADERS}}", "".join(f"<th>{check}</th>" for check in CHECKS))

    return app


def _check_token(base_url: str, token: str) -> None:
    """Refuse early, with Airflow's status, a token Airflow refuses: a per-Dag 403 then means "not readable"."""
    try:
        response = httpx.get(f"{base_url}/api/v2/dags", params={"limit": 1},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
    except httpx.TransportError as error:
        raise HTTPException(502, f"the Airflow REST API at {base_url} is unreachable ({type(error).__name__})") from None
    if response.status_code in (401, 403):
        raise HTTPException(response.status_code, "Airflow refused these credentials, or they may read no Dags")
    if response.is_error:
        raise HTTPException(502, f"the Airflow REST API at {base_url} answered HTTP {response.status_code}")


class RemoteAgentsPlugin(AirflowPlugin):
    name = "remote_agents"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Remote agents status"}]
    external_views = [
        {
            "name": "Remote agents",
            "href": f"{URL_PREFIX}/",
            "url_route": "remote-agents",
            "destination": "nav",
            "category": "browse",
        }
    ]


# Rendered by the browser from status.json, so the page and the CLI show one model. Text goes in with
# textContent only: findings and spec errors are data, never markup.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Remote agents: environments</title>
<style>
  body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1rem; }
  table { border-collapse: collapse; }
  th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
  td.green { background: #c8f0c8; } td.red { background: #f5c2c2; } td.unknown { background: #ddd; }
  td.error { color: #a00; } #message { color: #a00; }
</style>
</head>
<body>
<h1>Environments</h1>
<p id="message"></p>
<table id="environments">
<thead><tr><th>Environment</th><th>Bootstrap</th>{{CHECK_HEADERS}}<th>Drift</th><th>Tokens</th><th>Chart</th></tr></thead>
<tbody></tbody>
</table>
<script>
const checks = Array.from(document.querySelectorAll("thead th")).slice(2, -3).map(th => th.textContent);

function cell(row, text, className, title) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  if (title) td.title = title;
  return td;
}

function runLink(td, run) {
  // The page runs in the UI's iframe: the run opens in the whole window.
  const a = document.createElement("a");
  a.href = "/dags/" + encodeURIComponent(run.dag_id) + "/runs/" + encodeURIComponent(run.run_id);
  a.target = "_top";
  a.textContent = td.textContent;
  td.replaceChildren(a);
}

function bootstrapText(env) {
  const run = env.bootstrap;
  if (!run) return "never bootstrapped";
  const took = run.duration_seconds == null ? "" : " (" + Math.round(run.duration_seconds) + " s)";
  const counts = Object.entries(run.counts).map(([action, n]) => n + " " + action).join(", ");
  return run.state + " " + (run.start || "") + took + (counts ? ": " + counts : "");
}

function tokenText(tokens) {
  return tokens.map(t => t.kind + " " + (t.live === false ? "expired" : t.days_left == null ? "never expires"
                                                   : t.days_left + " days")).join(", ") || "-";
}

function addRow(body, env) {
  const row = body.insertRow();
  row.dataset.environment = env.name;
  cell(row, env.name);
  if (env.error) {
    const td = cell(row, "invalid spec " + env.spec_file + ": " + env.error.join("; "), "error");
    td.colSpan = checks.length + 4;
    return;
  }
  const bootstrap = cell(row, bootstrapText(env));
  if (env.bootstrap) runLink(bootstrap, env.bootstrap);
  const health = env.health ? Object.fromEntries(env.health.checks.map(c => [c.check, c])) : {};
  for (const check of checks) {
    const c = health[check];
    const td = cell(row, c ? (c.status === "red" ? "failed" : c.status === "green" ? "ok" : "unknown") : "-",
                    c ? c.status : "unknown", c ? (c.findings.join("\\n") || (env.health.end || "")) : "never checked");
    if (c) runLink(td, env.health);
  }
  const drift = cell(row, env.drift ? (env.drift.findings == null ? "unknown" : String(env.drift.findings)) : "never checked");
  if (env.drift) runLink(drift, env.drift);
  cell(row, tokenText(env.tokens));
  cell(row, (env.chart_version_installed || "-") + " (spec " + (env.chart_version_spec || "-") + ")");
}

async function load() {
  const base = location.pathname.replace(/\\/?$/, "/");
  const response = await fetch(base + "status.json", {credentials: "same-origin"});
  const message = document.getElementById("message");
  if (!response.ok) {
    message.textContent = "HTTP " + response.status + ": " + ((await response.json()).detail || "");
    return;
  }
  const environments = await response.json();
  const body = document.querySelector("#environments tbody");
  environments.forEach(env => addRow(body, env));
  if (!environments.length) message.textContent = "No environment you may read.";
}

load();
</script>
</body>
</html>
"""
