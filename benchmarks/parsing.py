"""Dag file parse time with 1, 10 and 50 environment specs, as Airflow's own DagBag measures it.

The Dag processor forks a process per file parse from its manager, which has imported Airflow and,
with ``[dag_processor] parsing_pre_import_modules`` (default on), every ``airflow.*`` module the
file names anywhere (``iter_airflow_imports``), but nothing else the file imports; before forking
it calls ``gc.freeze()`` (``DagFileProcessorManager.before_run``), so the parse does not scan the
manager's objects in every garbage collection. Each file is parsed here in a fresh interpreter that
does exactly that first, and the figure is that DagBag's
``dagbag_stats`` duration for the file: our modules' imports, spec loading and Dag construction.

``python -m benchmarks.parsing <dag file>`` is that child: it prints the file's stats as JSON.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "include" / "environments" / "sandbox.yaml"


def generate_specs(folder: Path, count: int) -> None:
    """``count`` valid variants of the sandbox spec (distinct names, clusters and namespaces)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    base = yaml.safe_load(TEMPLATE.read_text())
    for index in range(count):
        spec = json.loads(json.dumps(base))
        spec["name"] = f"env-{index:03d}"
        spec["cluster"]["name"] = f"remote-agents-env-{index:03d}"
        spec["namespace"] = f"astro-agents-{index:03d}"
        (folder / f"env-{index:03d}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def parse_file(dag_file: Path, environments: Path, env: dict[str, str]) -> dict[str, Any]:
    """Parse one Dag file in a fresh interpreter; its dagbag_stats entry (seconds, Dag and task counts)."""
    child_env = {**env, "REMOTE_AGENTS_ENVIRONMENTS": str(environments)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.parsing", str(dag_file)], env=child_env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(dag_file: str) -> None:
    import importlib

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import iter_airflow_imports

    for module in iter_airflow_imports(dag_file):  # as DagFileProcessorProcess.start does
        importlib.import_module(module)
    gc.freeze()  # as the manager does before it forks a parse
    bag = DagBag(dag_folder=dag_file)
    # One file was given, so there is one entry (its `file` is relative to that file: ".").
    stat = bag.dagbag_stats[0] if bag.dagbag_stats else None
    print(json.dumps({
        "file": Path(dag_file).name,
        "seconds": stat.duration.total_seconds() if stat else None,
        "dags": stat.dag_num if stat else 0,
        "tasks": stat.task_num if stat else 0,
        "import_errors": {Path(k).name: v.splitlines()[-1] for k, v in bag.import_errors.items()},
    }))


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    main(sys.argv[1])
