"""``Runtime`` against a real nats-server: one client per key, none left behind; each
engine configured from its spec.

A client the runtime does not hold is never closed: its tasks outlive the
operator's cleanup handler and kopf waits 5 s for them at exit
(test_operator_stop.py shows it end to end).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from coordshard_operator.kube.runtime import Runtime
from coordshard_operator.kube.settings import OperatorSettings
from coordshard_operator.kube.spec import parse as parse_spec
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.testing.cluster import wait_until

pytestmark = pytest.mark.integration


def nats_tasks() -> list[asyncio.Task[object]]:
    """The running tasks of nats-py (a client's read loop, flusher, pings, connect)."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__.startswith(("Client.", "Subscription."))
    ]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts and never speaks: a NATS connect to it hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"nats://127.0.0.1:{listener.getsockname()[1]}"


async def test_daemons_connecting_at_once_share_one_client(nats_server: NatsServer) -> None:
    runtime = Runtime(settings=OperatorSettings())
    servers = (nats_server.url,)
    clients = await asyncio.gather(*(runtime.connection(servers) for _ in range(3)))
    assert clients[0] is clients[1] is clients[2] and clients[0].is_connected
    await runtime.close()
    await wait_until(lambda: not nats_tasks(), timeout=2, what="no nats-py task left")


async def test_a_connect_cancelled_midway_leaves_no_client_behind(silent_server: str) -> None:
    runtime = Runtime(settings=OperatorSettings())
    connecting = asyncio.ensure_future(runtime.connection((silent_server,)))
    await wait_until(nats_tasks, timeout=2, what="the connect under way")
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    assert runtime.connections == {}
    await wait_until(lambda: not nats_tasks(), timeout=2, what="no nats-py task left")


async def test_the_engine_takes_the_consumer_settings_of_its_spec(nats_server: NatsServer) -> None:
    runtime = Runtime(settings=OperatorSettings())
    s = parse_spec({
        "metadata": {"name": "orders", "namespace": "ns", "generation": 1},
        "spec": {
            "shards": 4096,
            "selector": {"matchLabels": {"app": "w"}},
            "nats": {"servers": [nats_server.url]},
            "consumer": {"ackWaitSeconds": 7, "maxAckPending": 50, "laneBlocks": 64},
        },
    })  # fmt: skip
    try:
        engine = await runtime.engine(s)
        config = engine.config
        assert (config.ack_wait_s, config.max_ack_pending, config.lane_blocks) == (7.0, 50, 64)
    finally:
        await runtime.close()
