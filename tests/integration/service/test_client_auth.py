"""A gateway's ``CoordinateClient.connect()`` with credentials and TLS from files.

The same real servers as the worker's (the ``secured`` fixture: an nkey user,
TLS with a CA made here, mutual TLS) and the same files the worker takes. With
them the client starts (it reads the stream, so it is in); without them, or
with the wrong ones, it fails at once with ``CoordinateCredentialsError``
rather than retrying until ``timeout`` and calling it an outage.
"""

from __future__ import annotations

import time
from pathlib import Path

import nats
import pytest

from coordshard_client import CoordinateClient, CoordinateCredentialsError
from coordshard_operator.testing.certs import TestCa

from .conftest import PREFIX, SHARDS, Provisioner, Secured

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
"""Long, so that failing "at once" is told from waiting the timeout out."""


async def create_stream(secured: Secured) -> None:
    nc = await nats.connect(secured.server.url, max_reconnect_attempts=1, **secured.connect)
    try:
        await Provisioner(nc.jetstream(), "SECURED").create_stream()
    finally:
        await nc.close()


def connect(secured: Secured, **files: str) -> CoordinateClient:
    return CoordinateClient.connect(
        servers=[secured.server.url], prefix=PREFIX, stream="SECURED", timeout=TIMEOUT, **files
    )


async def test_the_files_the_worker_takes_get_the_client_in(secured: Secured) -> None:
    await create_stream(secured)
    async with connect(secured, **secured.files) as client:
        assert client.shards == SHARDS  # read from the stream: connected and allowed


async def test_without_them_the_client_is_refused_at_once(secured: Secured, tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(CoordinateCredentialsError, match="refused") as e:
        async with connect(secured):
            pass
    assert time.monotonic() - began < TIMEOUT / 2
    assert e.value.setting is None


@pytest.mark.parametrize("secured", ["tls", "mutual-tls"], indirect=True)
async def test_a_ca_that_did_not_sign_the_server_is_refused_at_once(
    secured: Secured, tmp_path: Path
) -> None:
    (tmp_path / "other-ca.crt").write_bytes(TestCa().cert)
    files = secured.files | {"tls_ca": str(tmp_path / "other-ca.crt")}
    with pytest.raises(CoordinateCredentialsError, match="SSLCertVerificationError"):
        async with connect(secured, **files):
            pass


def test_an_unreadable_file_is_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(CoordinateCredentialsError, match=r"nkey_seed: cannot read .*nope") as e:
        CoordinateClient.connect(servers=["nats://127.0.0.1:1"], nkey_seed=str(tmp_path / "nope"))
    assert e.value.setting == "nkey_seed"
    with pytest.raises(CoordinateCredentialsError, match="tls_cert and tls_key go together"):
        CoordinateClient.connect(servers=["nats://127.0.0.1:1"], tls_cert=str(tmp_path / "c"))
