#!/usr/bin/env bash
# The whole test suite: lint, types, import layering, then pytest.
# This is the README's test command and what CI runs. Extra args go to pytest.
# Under CI=true the mutant check (scripts/mutants.sh, a few minutes) runs after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check .
echo "== mypy" >&2
mypy
echo "== import-linter" >&2
lint-imports
echo "== pytest" >&2
pytest "$@"
if [ "${CI:-}" = true ]; then
  echo "== mutants" >&2
  # With no pytest args the whole suite has just passed, the listed tests among them.
  if [ $# -eq 0 ]; then python scripts/mutants.py --no-baseline; else python scripts/mutants.py; fi
fi
