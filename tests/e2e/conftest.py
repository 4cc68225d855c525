"""A real Kubernetes cluster for the opt-in e2e tests (``--with-e2e``).

``KUBECONFIG`` set: that cluster is used. Otherwise a kind cluster is made with
pytest-kind, which needs a working Docker engine (and downloads kind and
kubectl); without either the tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _docker_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker binary (kind needs a Docker engine); or set KUBECONFIG"
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "docker does not answer (kind needs a Docker engine); or set KUBECONFIG"
    return None


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.environ.get("KUBECONFIG"):
        yield Path(os.environ["KUBECONFIG"])
        return
    reason = _docker_reason()
    if reason:
        pytest.skip(reason)
    from pytest_kind import KindCluster  # only when a cluster can really be made

    cluster = KindCluster("coordshard-e2e")
    cluster.create()
    try:
        yield cluster.kubeconfig_path
    finally:
        cluster.delete()
