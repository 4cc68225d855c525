#!/usr/bin/env bash
# Break each correctness guard listed in tests/mutants.toml, one at a time, and
# check its tests fail; every file is restored afterwards (also on Ctrl-C).
# Exits non-zero unless every mutant is killed; prints "killed K of N".
# Needs what the tests need (PostgreSQL for the store entries: see
# scripts/services.sh). Args: mutant names to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python scripts/mutants.py "$@"
