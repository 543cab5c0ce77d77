"""The README's main job: validate and render every example environment spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "remote-agents"


def run(*args: str) -> str:
    return subprocess.run([str(CLI), *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    for spec in sorted((ROOT / "include" / "environments").glob("*.yaml")):
        relative = spec.relative_to(ROOT)
        print(f"\n=== {relative}")
        print(run("validate", str(relative)).strip())
        for part in ("values", "manifests", "policies", "cluster"):
            rendered = run("render", str(relative), "--only", part)
            print(f"--- {part}: {len(rendered.splitlines())} lines")
        print(run("render", str(relative), "--only", "values"))


if __name__ == "__main__":
    sys.exit(main())
