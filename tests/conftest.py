"""Suite-wide options and markers.

Tests under ``tests/e2e`` need a real Kubernetes cluster and run only with
``--with-e2e``; everything else runs by default against real servers.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run tests marked e2e (need Docker + kind, or KUBECONFIG)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="needs a real Kubernetes cluster: run with --with-e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
