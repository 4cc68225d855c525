"""The real operator connecting to NATS with credentials from Kubernetes Secrets.

A real nats-server that requires an nkey user, one that requires TLS (a CA
and server certificate made here), and one that requires a client
certificate too (mutual TLS); the CR names Secrets in its namespace, on the
API-server double and on the real control plane (where the operator reads
them as the chart's ServiceAccount, through its ``get secrets`` grant), and
the operator must create the consumers.
Missing or wrong Secrets must give Degraded plus a Warning Event, no crash,
and a fixed Secret must be picked up by the next reconcile.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.testing.certs import TestCa, server_tls
from coordshard_operator.testing.cluster import Cluster, member_of, wait_until
from coordshard_operator.testing.kubecluster import KubeCluster
from coordshard_operator.testing.users import authorization, new_user_seed

from . import test_operator_on_both
from .test_operator_on_both import Scenario

scenario = test_operator_on_both.scenario  # the fixture: one test, two backends

pytestmark = pytest.mark.integration


def condition_reason(cluster: Cluster | KubeCluster, type_: str) -> str | None:
    for c in cluster.status().get("conditions") or []:
        if c["type"] == type_:
            return str(c["reason"])
    return None


async def consumer_names(url: str, **connect: Any) -> set[str]:
    nc = await nats.connect(url, **connect)
    try:
        return {member_of(i) for i in await nc.jetstream().consumers_info("COORDINATE")}
    except nats.js.errors.NotFoundError:
        return set()
    finally:
        await nc.close()


@pytest.fixture
def nkey_server(tmp_path: Path) -> Iterator[tuple[NatsServer, bytes]]:
    seed = new_user_seed()
    server = start_server(tmp_path / "nkey-nats", extra_config=authorization(seed))
    yield server, seed
    server.kill()


async def test_an_nkey_seed_from_a_secret_connects_and_bad_secrets_degrade(
    scenario: Scenario,
    nkey_server: tuple[NatsServer, bytes],
    chart_rbac: Callable[..., set[tuple[str, str, str]]],
    tmp_path: Path,
) -> None:
    server, seed = nkey_server
    cluster = scenario.cluster
    proc = scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_cr(shards=4, nats={"servers": [server.url], "nkeySecretRef": {"name": "nats-user"}})
    await wait_until(
        lambda: condition_reason(cluster, crd.CONDITION_DEGRADED) == crd.REASON_SECRET_UNAVAILABLE,
        what="Degraded: the Secret is missing",
    )
    assert cluster.condition(crd.CONDITION_DEGRADED) == "True"
    await wait_until(  # kopf posts Events from a queue, after the status patch
        lambda: any(
            f"{scenario.namespace}/nats-user" in m
            for m in cluster.events(crd.REASON_SECRET_UNAVAILABLE)
        ),
        what="a Warning Event naming the Secret",
    )

    cluster.put_secret("nats-user", {"other": b"x"})
    await wait_until(
        lambda: any("nkey.seed" in m for m in cluster.events(crd.REASON_SECRET_UNAVAILABLE)),
        what="an Event naming the missing key",
    )

    wrong = new_user_seed()
    cluster.put_secret("nats-user", {"nkey.seed": wrong})
    await wait_until(
        lambda: condition_reason(cluster, crd.CONDITION_DEGRADED) == crd.REASON_NATS_AUTH_FAILED,
        what="Degraded: NATS refused the seed",
    )
    await wait_until(lambda: cluster.events(crd.REASON_NATS_AUTH_FAILED), what="an auth Event")
    assert proc.running()

    cluster.put_secret("nats-user", {"nkey.seed": seed})  # a new resourceVersion
    await wait_until(
        lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready", timeout=20
    )
    assert await consumer_names(server.url, nkeys_seed_str=seed.decode()) == {
        cluster.consumer("w-0")
    }
    assert proc.running()
    text = (cluster.status(), cluster.events(crd.REASON_NATS_AUTH_FAILED))
    text += ((tmp_path / "operator.log").read_text(),)
    if isinstance(cluster, Cluster):
        text += (cluster.api.requests,)
    assert scenario.requests() == chart_rbac()  # the default chart's `get secrets` is used
    assert seed.decode() not in repr(text) and wrong.decode() not in repr(text)


async def test_tls_with_the_ca_from_a_secret(scenario: Scenario, tmp_path: Path) -> None:
    cluster = scenario.cluster
    ca = TestCa()
    tls = server_tls(ca, tmp_path, verify=False)
    server = start_server(tmp_path / "tls-nats", extra_config=tls)
    try:
        scenario.start_operator()
        cluster.put_secret("nats-tls", {crd.SECRET_CA: ca.cert})
        cluster.add_pod("w-0")
        cluster.add_cr(
            shards=4, nats={"servers": [server.url], "tlsSecretRef": {"name": "nats-tls"}}
        )
        await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready")
        ctx = ssl.create_default_context(cadata=ca.cert.decode())
        assert await consumer_names(server.url, tls=ctx) == {cluster.consumer("w-0")}
    finally:
        server.kill()


async def test_mutual_tls_with_the_client_pair_from_a_secret(
    scenario: Scenario, tmp_path: Path
) -> None:
    cluster = scenario.cluster
    ca = TestCa()
    client = ca.issue("coordshard-operator")
    (tmp_path / "client.crt").write_bytes(client.cert)
    (tmp_path / "client.key").write_bytes(client.key)
    tls = server_tls(ca, tmp_path, verify=True)
    server = start_server(tmp_path / "mtls-nats", extra_config=tls)
    try:
        # The server does demand a client certificate: the CA alone is refused.
        trust_only = ssl.create_default_context(cadata=ca.cert.decode())
        # (TLS 1.3: the alert, or a broken pipe when the server hangs up first.)
        with pytest.raises((ssl.SSLError, BrokenPipeError, ConnectionResetError)):
            await nats.connect(server.url, tls=trust_only, allow_reconnect=False, connect_timeout=2)
        scenario.start_operator()
        cluster.put_secret(
            "nats-mtls",
            {
                crd.SECRET_CA: ca.cert,
                crd.SECRET_TLS_CERT: client.cert,
                crd.SECRET_TLS_KEY: client.key,
            },
        )
        cluster.add_pod("w-0")
        cluster.add_cr(
            shards=4, nats={"servers": [server.url], "tlsSecretRef": {"name": "nats-mtls"}}
        )
        await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready")
        mutual = ssl.create_default_context(cadata=ca.cert.decode())
        mutual.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
        assert await consumer_names(server.url, tls=mutual) == {cluster.consumer("w-0")}
    finally:
        server.kill()


async def test_a_cr_whose_secret_is_gone_is_released_after_the_timeout_and_says_so(
    scenario: Scenario, nkey_server: tuple[NatsServer, bytes]
) -> None:
    # As when a namespace is deleted: its Secrets go with the CR, and a finalizer
    # that waited for them for ever would keep the namespace Terminating.
    server, seed = nkey_server
    cluster = scenario.cluster
    scenario.start_operator(env={"COORDSHARD_RELEASE_TIMEOUT_SECONDS": "2"})
    cluster.put_secret("nats-user", {"nkey.seed": seed})
    cluster.add_pod("w-0")
    cluster.add_cr(shards=4, nats={"servers": [server.url], "nkeySecretRef": {"name": "nats-user"}})
    await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready")
    cluster.delete_secret("nats-user")
    cluster.delete_cr("orders")
    await wait_until(lambda: not cluster.has_cr("orders"), what="CR gone", timeout=30)
    await wait_until(
        lambda: any("nats-user" in m for m in cluster.events(crd.EVENT_CONSUMERS_LEFT)),
        what="a Warning Event saying the consumers stay",
    )
    left = await consumer_names(server.url, nkeys_seed_str=seed.decode())
    assert left == {cluster.consumer("w-0")}
