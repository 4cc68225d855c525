"""Secrets -> NATS connect options: keys, identity, no leaks, no leftover files."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest

from coordshard_operator.kube import crd
from coordshard_operator.kube.errors import SecretUnavailableError
from coordshard_operator.kube.natsauth import NO_AUTH, Secret, SecretReader, load, tls_context
from coordshard_operator.kube.spec import SecretRef, Spec
from coordshard_operator.testing.certs import TestCa

SEED = b"SUAJGVIQGFUYPQ4FHPQVTU7JZORWHE4LZ63XXODE3WVCHQ7SW2IU4HROKM\n"


def spec(**kw: Any) -> Spec:
    return Spec(name="orders", namespace="ns", generation=1, shards=4, **kw)


def reader(*secrets: Secret) -> tuple[SecretReader, list[tuple[str, str]]]:
    by_name = {s.name: s for s in secrets}
    calls: list[tuple[str, str]] = []

    async def read(namespace: str, name: str) -> Secret:
        calls.append((namespace, name))
        if name not in by_name:
            raise SecretUnavailableError(f"Secret {namespace}/{name}: not found")
        return by_name[name]

    return read, calls


async def test_no_refs_read_nothing() -> None:
    read, calls = reader()
    assert await load(spec(), read) is NO_AUTH and calls == []


async def test_an_nkey_seed_becomes_the_option_and_the_rv_the_identity() -> None:
    ref = SecretRef(name="nats", key="nkey.seed")
    read, calls = reader(Secret("ns", "nats", "7", {"nkey.seed": SEED}))
    auth = await load(spec(nkey=ref), read)
    assert auth.options["nkeys_seed_str"] == SEED.decode().strip() and calls == [("ns", "nats")]
    assert SEED.decode().strip() not in repr(auth)
    read2, _ = reader(Secret("ns", "nats", "8", {"nkey.seed": SEED}))
    assert (await load(spec(nkey=ref), read2)).identity != auth.identity


async def test_a_missing_key_names_the_key_not_the_content() -> None:
    read, _ = reader(Secret("ns", "nats", "1", {"other": SEED}))
    with pytest.raises(SecretUnavailableError, match=r"no key 'nats\.creds'") as e:
        await load(spec(credentials=SecretRef(name="nats", key="nats.creds")), read)
    assert SEED.decode().strip() not in str(e.value)


def test_mutual_tls_loads_the_pair_and_leaves_no_file() -> None:
    ca = TestCa()
    client = ca.issue("client")
    data = {
        crd.SECRET_CA: ca.cert,
        crd.SECRET_TLS_CERT: client.cert,
        crd.SECRET_TLS_KEY: client.key,
    }
    before = set(Path(tempfile.gettempdir()).glob("coordshard-tls-*"))
    ctx = tls_context(Secret("ns", "tls", "1", data))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert set(Path(tempfile.gettempdir()).glob("coordshard-tls-*")) == before
    bad = {**data, crd.SECRET_TLS_KEY: b"not a key"}
    with pytest.raises(SecretUnavailableError, match="not a PEM key pair"):
        tls_context(Secret("ns", "tls", "1", bad))
