"""Finding the environment specs a Dag file turns into Dags: local files only, read at parse time.

A spec that fails validation must not take the other environments' Dags down with it, so it is
returned as its ConfigError; each Dag file turns it into a Dag whose only task reports the error
(``invalid_spec_dag``), and ``dags/remote_agents_spec_errors.py``, which holds no Dag, raises them
all so that they also reach Airflow's import-error view (``raise_spec_errors``).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, TriggerRule, task

from remote_agents.errors import ConfigError
from remote_agents.spec import EnvironmentSpec, load_spec

ENVIRONMENTS_VARIABLE = "REMOTE_AGENTS_ENVIRONMENTS"
START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EnvironmentFile:
    path: Path
    spec: EnvironmentSpec | None
    error: ConfigError | None
    declared_name: str | None = None  # the name several files declare, when that is the error

    @property
    def name(self) -> str:
        """The environment name, or for an invalid file a name fit for its error Dags' ids."""
        if self.spec:
            return self.spec.name
        return self.declared_name or dag_id_part(self.path.stem)


def project_root(dag_file: str) -> Path:
    """The project (the Dag bundle) a Dag file belongs to: the folder holding its ``dags/``.

    Relative paths in a spec (``chart.path``) are resolved against it, never against the working
    directory, which is the worker's and not the project's. The worker parses the Dag file from its
    own copy of the bundle, so this is where the task finds the files.
    """
    return Path(dag_file).resolve().parents[1]


def environments_folder(dag_file: str) -> Path:
    """`$REMOTE_AGENTS_ENVIRONMENTS`, else `include/environments` in the project (Astro layout)."""
    configured = os.environ.get(ENVIRONMENTS_VARIABLE)
    return Path(configured) if configured else project_root(dag_file) / "include" / "environments"


def environment_files(folder: Path) -> list[EnvironmentFile]:
    """Every spec file (``*.yaml``, ``*.yml``) in ``folder``, each valid, or as its error; one entry
    per environment name. Nothing a file holds may raise here: every Dag file calls this."""
    found = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            found.append(EnvironmentFile(path, load_spec(path), None))
        except ConfigError as error:
            found.append(EnvironmentFile(path, None, error))
        except Exception as error:  # noqa: BLE001 - a bug of ours on one file must not hide every environment
            problem = f"(file): could not be read ({type(error).__name__}: {str(error)[:200]}); please report this"
            found.append(EnvironmentFile(path, None, ConfigError([problem], str(path))))
    return _one_per_name(found)


# Airflow's dag_id: letters, digits, '-', '_', '.', at most 250 characters (the longest prefix is 26).
_NOT_IN_DAG_ID = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME_IN_DAG_ID = 200


def dag_id_part(stem: str) -> str:
    """A file's stem as the environment part of a dag_id; a shortened one keeps a digest, so two
    long names stay apart."""
    name = _NOT_IN_DAG_ID.sub("-", stem.replace("_", "-")).strip("-.") or "unnamed"
    return name if len(name) <= MAX_NAME_IN_DAG_ID else _with_digest(name, stem)


def _with_digest(name: str, of: str) -> str:
    """``name`` shortened to fit, with a digest of ``of`` that tells it from its look-alikes."""
    return f"{name[: MAX_NAME_IN_DAG_ID - 9]}-{hashlib.sha256(of.encode()).hexdigest()[:8]}"


def _one_per_name(found: list[EnvironmentFile]) -> list[EnvironmentFile]:
    # Dag ids are made from the name: two valid files of one name would silently become one set of
    # Dags, the later file winning. They become one error instead, naming both. An invalid file's name
    # comes from its file name; where that is taken it gets a digest, so it never hides a valid spec.
    by_name: dict[str, list[EnvironmentFile]] = {}
    for environment in found:
        if environment.spec:
            by_name.setdefault(environment.name, []).append(environment)
    merged = []
    for name, files in by_name.items():
        if len(files) == 1:
            merged.append(files[0])
            continue
        paths = ", ".join(f.path.name for f in files)
        problem = (f"name: {name!r} is the name of {len(files)} spec files ({paths}); each environment needs its "
                   "own name, so rename all but one (the name makes the Dag ids, Secrets and AWS tags)")
        merged.append(EnvironmentFile(files[0].path, None, ConfigError([problem], source=paths), name))
    taken = {environment.name for environment in merged}
    for environment in (e for e in found if not e.spec):
        name = environment.name
        if name in taken:
            name = _with_digest(name, environment.path.name)
        taken.add(name)
        merged.append(EnvironmentFile(environment.path, None, environment.error, name))
    return sorted(merged, key=lambda environment: environment.path.name)


def needed_by_others(spec: EnvironmentSpec, specs: list[EnvironmentSpec]) -> dict[str, list[str]]:
    """What the other specs of the folder still use of ``spec``'s AWS resources, by resource, with
    the environments that use it: a teardown of ``spec`` keeps these.

    An EKS cluster is shared when another spec names it too (it adopts it), and with it its OIDC
    provider; an IRSA role when another spec names the same role. Which of them this environment
    owns is only known at run time, from the ownership tags.
    """
    from remote_agents import naming

    needed: dict[str, list[str]] = {}
    roles = set(naming.irsa_role_names(spec).values()) if spec.irsa else set()
    for other in specs:
        if other.name == spec.name:
            continue
        if spec.eks and other.eks and (other.eks.name, other.eks.region) == (spec.eks.name, spec.eks.region):
            needed.setdefault(f"eks:cluster/{spec.eks.name}", []).append(other.name)
        for role in sorted(roles & set(naming.irsa_role_names(other).values()) if other.irsa else set()):
            needed.setdefault(f"iam:role/{role}", []).append(other.name)
    return needed


def environment_asset(name: str) -> Asset:
    """Updated by each applied bootstrap; the environment's health Dag is scheduled on it.

    Name only: an Asset with a URI makes Airflow load every provider's URI handlers (boto3 among
    them), about 0.1 s added to each Dag file's parse for nothing.
    """
    return Asset(name=f"remote_agents_environment__{name}")


def cluster_kwargs(spec: EnvironmentSpec) -> dict[str, Any]:
    """How the Kubernetes-side operators reach this environment's cluster."""
    if spec.eks:
        return {"eks_cluster_name": spec.eks.name, "aws_conn_id": spec.aws_conn_id, "region_name": spec.eks.region}
    assert spec.cluster.kind == "existing"
    return {"kubernetes_conn_id": spec.cluster.kubernetes_conn_id, "aws_conn_id": None}


def invalid_spec_dag(dag_id: str, environment: EnvironmentFile) -> DAG:
    """A spec that fails validation still shows up, as a Dag whose one task explains the problem."""
    error = environment.error
    assert error is not None
    lines = "\n".join(f"- `{problem}`" for problem in error.problems)
    with DAG(
        dag_id=dag_id, schedule=None, start_date=START, catchup=False,
        description=f"invalid spec {environment.path.name}: {error.problems[0]}"[:200],
        dag_display_name=f"{dag_id} (invalid spec)",
        tags=["remote-agents", "invalid-spec"],
        doc_md=f"**Invalid spec** `{environment.path.name}` ({error.source}), nothing runs until it is fixed:\n\n{lines}\n",
    ) as dag:

        @task
        def invalid_spec() -> None:
            raise ValueError(str(environment.error))

        invalid_spec()
    return dag


class InvalidSpecsError(ConfigError):
    """Raised by the spec-errors Dag file, so that Airflow lists each invalid spec as an import error."""


def raise_spec_errors(environments: list[EnvironmentFile]) -> None:
    """Raise one error listing every invalid spec's problems, one per line; nothing when all are valid."""
    invalid = [environment for environment in environments if environment.error]
    if invalid:
        problems = [f"{environment.path.name}: {problem}" for environment in invalid
                    for problem in environment.error.problems]  # type: ignore[union-attr]
        raise InvalidSpecsError(problems, source=f"{len(invalid)} invalid environment spec(s); their Dags only report this")


def fail_run_when_a_task_failed(dag: DAG) -> None:
    """The summary runs ALL_DONE and succeeds, which would make a failed run look green: this leaf
    fails the run whenever any other task failed. Call it last, inside the Dag's context."""

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def a_task_failed() -> None:
        raise RuntimeError("a task of this run failed: the summary lists what was done, the failed task's log says why")

    watcher = a_task_failed()
    for other in dag.tasks:
        if other is not watcher.operator:
            other >> watcher
