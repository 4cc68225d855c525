#!/usr/bin/env bash
# Break each correctness guard listed in tests/mutants.toml and check its tests
# fail. Mutants run in copies of the tree (--jobs at once, default 2); the
# checkout itself is never modified.
# Exits non-zero unless every mutant is killed; prints "killed K of N".
# Needs what the tests need (PostgreSQL for the store entries: see
# scripts/services.sh). Args: mutant names to run only those, --jobs N, --no-baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python scripts/mutants.py "$@"
