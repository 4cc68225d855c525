"""Fixtures for tests against the Kubernetes API-server double.

``apiserver`` is a started double with the CoordinateShards CRD registered
(as ``kubectl apply -f crds/`` would); ``http`` is an aiohttp session for
tests that speak to it over the wire, as kopf does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from coordshard_operator.testing.apiserver import ApiServer

CRD_PATH = Path(__file__).parents[3] / "crds" / "coordinateshards.yaml"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.5)
    await server.start()
    server.create(
        server.find_type("apiextensions.k8s.io", "customresourcedefinitions"), None, load_crd()
    )
    yield server
    await server.stop()


@pytest.fixture
async def http(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=apiserver.url) as session:
        yield session
