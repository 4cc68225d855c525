#!/usr/bin/env bash
# Create .venv (once) and install coordshard with every extra into it.
# Needs only Python 3.11+ on PATH. Idempotent: rerunning refreshes the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.coordshard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing coordshard[service,operator,dev] into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[service,operator,dev]"
  touch "$stamp"
fi
bash scripts/get-helm.sh || echo "setup: could not get helm; chart tests will skip (and fail under CI=true)" >&2
