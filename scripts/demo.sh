#!/usr/bin/env bash
# Set up .venv and run the main job. Extra args replace the default ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- plan --shards 16 --members pod-a,pod-b,pod-c --previous docs/examples/plan/previous.json
fi
exec .venv/bin/coordshard "$@"
