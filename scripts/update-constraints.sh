#!/usr/bin/env bash
# Regenerates constraints.txt from pyproject.toml (keeping existing pins where still valid).
# Run after changing dependencies; pass --upgrade to move every pin to the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
.venv/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 \
    --no-header --no-annotate "$@" -o constraints.txt
