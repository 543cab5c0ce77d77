"""Parsing the Dag files: no import errors, one bootstrap Dag per spec, and no network call.

The Dag folder is parsed by Airflow's DagBag in a child interpreter whose ``socket.connect`` (and
name resolution) raise for every internet address, as a Dag processor without network access would;
each attempt is also written to a file, so a call swallowed by the code under test still shows.
Correctness only: parse *time* is measured by ``make bench`` (benchmarks/parsing.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
SPEC_COUNT = 10
SPEC_ERRORS = DAGS / "remote_agents_spec_errors.py"  # holds no Dag: it reports invalid specs as an import error

BLOCK_NETWORK = '''
import os, socket

_LOG = os.environ["BLOCKED_CONNECTIONS_LOG"]


def _refuse(what):
    with open(_LOG, "a") as handle:
        handle.write(what + "\\n")
    raise OSError(f"network access during Dag parsing: {what}")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(f"connect {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(f"connect_ex {address!r}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    _refuse(f"getaddrinfo {host!r}")


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
'''

PARSE = '''
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(sys.argv[1])
print(json.dumps({
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {path: error.strip() for path, error in bag.import_errors.items()},
    "docs": {dag_id: dag.doc_md for dag_id, dag in bag.dags.items()},
}))
'''


def write_specs(folder: Path, count: int) -> None:
    """``count`` valid variants of the sandbox spec, each with its own name, cluster and namespace."""
    base = yaml.safe_load((ROOT / "include" / "environments" / "sandbox.yaml").read_text())
    for index in range(count):
        spec = {**base, "name": f"env-{index:02d}", "namespace": f"agents-{index:02d}",
                "cluster": {**base["cluster"], "name": f"remote-agents-env-{index:02d}"}}
        (folder / f"env-{index:02d}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def parse_offline(work: Path, environments: Path) -> dict[str, Any]:
    """DagBag of dags/ over the specs in ``environments``, parsed offline; plus every network attempt it made."""
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_NETWORK)
    attempts = work / "connections.log"
    attempts.touch()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "PYTHONPATH": str(site),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "REMOTE_AGENTS_ENVIRONMENTS": str(environments),
        "BLOCKED_CONNECTIONS_LOG": str(attempts),
        # Anything that tries a proxy instead of a direct connection finds none either.
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
    }
    out = subprocess.run([sys.executable, "-c", PARSE, str(DAGS)], env=env, cwd=work, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "attempts": attempts.read_text().splitlines()}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """10 generated specs."""
    work = tmp_path_factory.mktemp("parsing")
    environments = work / "environments"
    environments.mkdir()
    write_specs(environments, SPEC_COUNT)
    return parse_offline(work, environments)


def test_the_network_blocker_refuses_connections(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_NETWORK)
    probe = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError as e:\n    print(e)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "BLOCKED_CONNECTIONS_LOG": str(tmp_path / "log")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert "network access during Dag parsing" in out.stdout
    assert (tmp_path / "log").read_text()


def test_every_dag_file_imports_without_errors(parsed: dict[str, Any]) -> None:
    assert parsed["import_errors"] == {}


def test_each_dag_file_contributes_dags(parsed: dict[str, Any]) -> None:
    prefixes = {path.stem for path in DAGS.glob("*.py")} - {SPEC_ERRORS.stem}
    assert all(any(dag_id.startswith(prefix) for dag_id in parsed["dag_ids"]) for prefix in prefixes), parsed["dag_ids"]


def test_ten_specs_make_ten_bootstrap_dags(parsed: dict[str, Any]) -> None:
    bootstrap = [dag_id for dag_id in parsed["dag_ids"] if dag_id.startswith("remote_agents_bootstrap__")]
    assert sorted(bootstrap) == [f"remote_agents_bootstrap__env-{index:02d}" for index in range(SPEC_COUNT)]


def test_parsing_makes_no_network_call(parsed: dict[str, Any]) -> None:
    assert parsed["attempts"] == []


def test_an_invalid_spec_keeps_every_dag_as_its_error_and_reaches_the_import_error_view(tmp_path: Path) -> None:
    environments = tmp_path / "environments"
    environments.mkdir()
    write_specs(environments, 2)
    bad = yaml.safe_load((environments / "env-00.yaml").read_text())
    bad.update(name="broken", namespace="Not_A_Label", workers=[{"name": "w", "queue": "default", "replicas": 0}])
    (environments / "broken.yaml").write_text(yaml.safe_dump(bad))

    parsed = parse_offline(tmp_path, environments)

    kinds = ("bootstrap", "teardown", "health", "drift")
    assert {f"remote_agents_{kind}__{env}" for kind in kinds for env in ("env-00", "env-01", "broken")} <= set(parsed["dag_ids"])
    doc = parsed["docs"]["remote_agents_health__broken"]
    problems = [line for line in doc.splitlines() if line.startswith("- `")]
    assert len(problems) == 2 and any("namespace" in p for p in problems) and any("replicas" in p for p in problems)
    (path, error), = parsed["import_errors"].items()
    assert path.endswith(SPEC_ERRORS.name)
    assert error.count("broken.yaml: ") == 2 and "InvalidSpecsError" in error


def alias_bomb() -> str:
    """About 2 KB of YAML whose aliases expand into billions of strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(["name: bomb", *lines, ""])


def test_hostile_spec_files_leave_every_other_environment_standing(tmp_path: Path) -> None:
    environments = tmp_path / "environments"
    environments.mkdir()
    write_specs(environments, 2)
    valid_yml = yaml.safe_load((environments / "env-00.yaml").read_text())
    (environments / "env-yml.yml").write_text(yaml.safe_dump({**valid_yml, "name": "env-yml", "namespace": "agents-yml"}))
    (environments / "env-00.yml").write_text("name: env-00\nworkers: 3\n")  # an invalid file named like a valid spec
    (environments / "bomb.yaml").write_text(alias_bomb())
    (environments / "list-key.yaml").write_text("? [a, b]\n: 1\n")
    (environments / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    (environments / "utf16.yaml").write_bytes("name: utf16\n".encode("utf-16"))
    (environments / "folder.yaml").mkdir()
    (environments / "bad name #1.yaml").write_text("name: 3\n")
    (environments / f"{'x' * 240}.yaml").write_text("name: [1]\n")

    parsed = parse_offline(tmp_path, environments)

    kinds = ("bootstrap", "teardown", "health", "drift")
    for env in ("env-00", "env-01", "env-yml"):
        assert {f"remote_agents_{kind}__{env}" for kind in kinds} <= set(parsed["dag_ids"]), env
        assert "invalid spec" not in (parsed["docs"][f"remote_agents_bootstrap__{env}"] or ""), env
    problems = {dag_id.removeprefix("remote_agents_health__"): doc for dag_id, doc in parsed["docs"].items()
                if dag_id.startswith("remote_agents_health__") and "**Invalid spec**" in (doc or "")}
    expected = {"bomb": "YAML aliases (*name) expand it", "list-key": "a list is used as a key", "latin1": "is not UTF-8",
                "utf16": "UTF-16", "folder": "is a directory", "bad-name-1": "name", "env-00-": "workers"}
    for name, words in expected.items():
        (doc,) = [doc for env, doc in problems.items() if env.startswith(name)]
        assert words in doc, (name, doc)
    assert any(len(env) <= 200 and env.startswith("xxxx") for env in problems)
    assert all(len(dag_id) <= 250 for dag_id in parsed["dag_ids"])
    (path, error), = parsed["import_errors"].items()
    assert path.endswith(SPEC_ERRORS.name) and "bomb.yaml" in error and len(error) < 20_000
