"""`remote-agents plan`: what the bootstrap would create, update or leave unchanged; nothing is changed.

The plan is the bootstrap Dag's own dry run. The Dag file in the dags folder builds the Dag for the
spec (the same operators with the same arguments), ``dag.test()`` runs it with ``dry_run`` on, and
the ``summary`` task's report (its XCom) is the plan. Running the Dag, rather than calling each
operator's ``execute`` with a hand-made context, keeps what the operators rely on from a Dag run:
templated params, XComs passed between tasks (the node group names, the rendered values), the
mapped IRSA roles, trigger rules, and the task states the summary reads through the Task SDK. A
second copy of that wiring here would drift from the Dag's.

``dag.test()`` needs a metadata database: a throw-away AIRFLOW_HOME with SQLite, so that a plan
never writes a run into a real Deployment's database and needs no access to one. Connections come
from the environment (``AIRFLOW_CONN_*``) or a secrets backend configured in it. Airflow reads its
configuration once, at import, so this module is imported, and Airflow with it, only by ``plan``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_agents.errors import RemoteAgentsError
from remote_agents.progress import TaskProgress
from remote_agents.spec import EnvironmentSpec

BOOTSTRAP_DAG_FILE = "remote_agents_bootstrap.py"
RUN_LOG = "plan.log"


class PlanError(RemoteAgentsError):
    """The dry run could not be made; the message says why (and where its log is, when there is one)."""


@dataclass(frozen=True)
class Plan:
    report: dict[str, Any]  # summary.build_report's, of the dry run
    log: Path | None  # the run's log when the run failed; a planned run's is deleted with its Airflow home


def plan_bootstrap(spec_file: Path, spec: EnvironmentSpec, dags_folder: Path) -> Plan:
    """The bootstrap Dag of ``spec_file``'s folder, run dry against the environment's Connections."""
    spec_file, dags_folder = spec_file.resolve(), dags_folder.resolve()  # Airflow's settings take absolute paths
    if not (dags_folder / BOOTSTRAP_DAG_FILE).is_file():
        raise PlanError(f"{dags_folder}: no {BOOTSTRAP_DAG_FILE}; pass --dags-folder, the project's dags/ folder")
    home = Path(tempfile.mkdtemp(prefix="remote-agents-plan-"))
    configure_throwaway_airflow(home, dags_folder, spec_file.parent)
    log = home / RUN_LOG
    # The progress goes where stderr went before the run's output is sent to the log.
    watching = os.fdopen(os.dup(sys.stderr.fileno()), "w")
    try:
        with watching, TaskProgress(log, "plan", watching), output_to(log):
            report = dry_run_report(f"remote_agents_bootstrap__{spec.name}", dags_folder)
    except PlanError:
        shutil.rmtree(home, ignore_errors=True)  # the error says it all; the log holds only Airflow's start-up
        raise
    except Exception as error:  # from anywhere in Airflow; the message may quote a Connection, so it is redacted
        from remote_agents.hooks.helm import redact_text

        raise PlanError(redact_text(f"the dry run stopped: {type(error).__name__}: {error}; its log: {log}")) from None
    if report["outcome"] == "failed":
        return Plan(report, log)  # its home is kept: the log says more than the report's one line per failure
    shutil.rmtree(home, ignore_errors=True)
    return Plan(report, None)


def configure_throwaway_airflow(home: Path, dags_folder: Path, environments: Path) -> None:
    """Point Airflow (not yet imported) at ``home`` and a SQLite database in it, and the Dag files at
    the folder of the spec being planned."""
    if "airflow" in sys.modules:
        # Its configuration is already read: the run would go into whatever database that names.
        raise PlanError("Airflow is already imported in this process; run `remote-agents plan` as its own command")
    # Only the dags folder: a Deployment's other bundles (git ones, say) would be fetched for nothing.
    bundles = [{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(dags_folder)}}]
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "REMOTE_AGENTS_ENVIRONMENTS": str(environments),
    })


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's file descriptors 1 and 2 written to ``log``: Airflow's log handlers and helm,
    a child process, write there, not into the plan the command prints."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with log.open("ab") as handle:
        for fd in saved:
            os.dup2(handle.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def dry_run_report(dag_id: str, dags_folder: Path) -> dict[str, Any]:
    """Run ``dag_id`` of ``dags_folder`` once with ``dry_run`` on; its summary task's report."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    bag = DagBag(str(dags_folder))
    dag = bag.get_dag(dag_id)
    if dag is None:
        errors = "; ".join(f"{path}: {error.strip().splitlines()[-1]}" for path, error in bag.import_errors.items())
        raise PlanError(f"{dags_folder / BOOTSTRAP_DAG_FILE} made no Dag {dag_id}" + (f" ({errors})" if errors else ""))
    if "invalid-spec" in dag.tags:  # environments.invalid_spec_dag: the folder's specs are in conflict
        raise PlanError(f"{dag_id} is an invalid-spec Dag: {dag.description}")
    run = dag.test(run_conf={"dry_run": True})
    report = summary_report(dag_id, run.run_id)
    if report is None:
        raise PlanError(f"the dry run of {dag_id} ended {run.state} without a summary")
    return report


def summary_report(dag_id: str, run_id: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == "summary",
            XComModel.key == XCOM_RETURN_KEY,
        ))
    return dict(value) if value is not None else None
