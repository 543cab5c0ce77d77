#!/usr/bin/env bash
# Creates .venv with the pinned packages and .tools/bin with the pinned helm/kubectl.
# Re-running is cheap: each step is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

stamp=.venv/.installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Bytecode compilation halves every Airflow start (PYTHONDONTWRITEBYTECODE may be set here).
    .venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode \
        -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi

.venv/bin/python scripts/get_helm.py .tools/bin
