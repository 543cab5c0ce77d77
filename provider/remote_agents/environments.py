"""Finding the environment specs a Dag file turns into Dags: local files only, read at parse time.

A spec that fails validation must not take the other environments' Dags down with it, so it is
returned as its ConfigError; the Dag files turn it into a Dag whose only task reports the error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from remote_agents.errors import ConfigError
from remote_agents.spec import EnvironmentSpec, load_spec

ENVIRONMENTS_VARIABLE = "REMOTE_AGENTS_ENVIRONMENTS"


@dataclass(frozen=True)
class EnvironmentFile:
    path: Path
    spec: EnvironmentSpec | None
    error: ConfigError | None

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else self.path.stem.replace("_", "-")


def environments_folder(dag_file: str) -> Path:
    """`$REMOTE_AGENTS_ENVIRONMENTS`, else `include/environments` next to the dags folder (Astro layout)."""
    configured = os.environ.get(ENVIRONMENTS_VARIABLE)
    return Path(configured) if configured else Path(dag_file).resolve().parents[1] / "include" / "environments"


def environment_files(folder: Path) -> list[EnvironmentFile]:
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            found.append(EnvironmentFile(path, load_spec(path), None))
        except ConfigError as error:
            found.append(EnvironmentFile(path, None, error))
    return found
