"""Test-wide set-up: an isolated AIRFLOW_HOME, set before anything imports Airflow."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sandbox.environment import Sandbox

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="remote-agents-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["PATH"] = f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home() -> Iterator[None]:
    yield
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The whole sandbox for sandbox.yaml, in this process, with its Connections in os.environ.

    moto keeps its state per process, so every test shares this one sandbox (and its AwsEmulator);
    tests that change it call ``sandbox.reset()`` first.
    """
    from remote_agents.spec import load_spec
    from sandbox.environment import DEFAULT_SPEC, Sandbox

    instance = Sandbox(tmp_path_factory.mktemp("sandbox"), load_spec(DEFAULT_SPEC)).start()
    saved = {name: os.environ.get(name) for name in instance.env()}
    os.environ.update(instance.env())
    yield instance
    instance.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The metadata database (SQLite in the test AIRFLOW_HOME), migrated once for Dag runs."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture(scope="session")
def dagbag(airflow_db: None) -> object:
    """The project's dags/ folder parsed by Airflow's own DagBag."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))
