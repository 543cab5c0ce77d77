"""Time of the README's set-up (``bash scripts/setup.sh``) in a fresh copy of the repository.

Each run copies the working tree's files (tracked and untracked, not ignored: no .venv, no .tools)
to a temporary folder and runs the script there, so it builds a new venv and fetches helm/kubectl.
"Cold" gives uv and pip empty cache folders of their own, so every package is downloaded from PyPI;
"warm" re-uses the cache folders a cold run filled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh_copy(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def timed_setup(cache: Path) -> float:
    """Seconds of one set-up into a fresh copy, with uv's and pip's caches in ``cache``."""
    with tempfile.TemporaryDirectory(prefix="remote-agents-setup-") as work:
        copy = Path(work) / "repo"
        fresh_copy(copy)
        env = {**os.environ, "UV_CACHE_DIR": str(cache / "uv"), "PIP_CACHE_DIR": str(cache / "pip")}
        env.pop("VIRTUAL_ENV", None)
        started = time.monotonic()
        subprocess.run(["bash", "scripts/setup.sh"], cwd=copy, env=env, check=True, capture_output=True)
        return time.monotonic() - started


def measure(warm_runs: int) -> dict[str, list[float]]:
    """One cold run (it fills the cache), then ``warm_runs`` warm ones."""
    with tempfile.TemporaryDirectory(prefix="remote-agents-setup-cache-") as cache:
        cold = [timed_setup(Path(cache))]
        warm = [timed_setup(Path(cache)) for _ in range(warm_runs)]
    return {"cold": cold, "warm": warm}
