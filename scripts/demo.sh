#!/usr/bin/env bash
# Set up .venv and run the main job: local mode with load and chaos for a minute,
# then the independent check's summary. Extra args replace the default ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- up --workers 3 --shards 16 --load 200 --chaos 10 --duration 60
fi
exec .venv/bin/coordshard "$@"
