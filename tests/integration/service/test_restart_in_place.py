"""A worker container restarted in place (same pod UID, so the same consumer) keeps order.

The kubelet restarts a crashed container inside the same pod; within the grace
period nothing moves, so the new process binds to the consumer the dead one
held, with the dead one's deliveries still pending. Those come back only after
``ack_wait``, behind newer commands of their shards: applied then, they are
applied out of order and their stale positions overwrite later ones. The test
plays the dead process (it fetched a batch and never committed nor acked it),
then starts a real worker process under the same pod UID.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_client import CoordinateClient, MoveTo, Point
from coordshard_operator.local.natsserver import NatsServer

from .conftest import PREFIX, SHARDS, Provisioner, spawn_worker, start_member, wait_until

pytestmark = pytest.mark.integration

ACK_WAIT = 20.0
"""Long enough that a held delivery, if not rewound, comes back well after the rest."""
POINTS = [(f"sys-{i}", "p") for i in range(4)]
MOVES = 1200
HELD = 64


async def test_a_container_restarted_in_place_applies_every_command_in_stream_order(
    nats_server: NatsServer,
    nc: Client,
    provisioner: Provisioner,
    database_url: str,
    tmp_path: Path,
) -> None:
    consumer = await provisioner.assign(
        member="w", incarnation="1", shards=list(range(SHARDS)), ack_wait=ACK_WAIT
    )
    async with CoordinateClient(
        nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=60
    ) as client:
        first = await start_member(
            nats_server, provisioner, database_url=database_url, member="w", incarnation="1"
        )
        await wait_until(lambda: first.worker.bound)
        for system_id, point_id in POINTS:
            await client.create_system(system_id=system_id, name="order", dimension=2)
            await client.create_point(system_id=system_id, point_id=point_id, coordinates=(0, 0))
        await first.shutdown()

        # MoveTo, not Translate: positions do not commute, so order shows.
        sent = [POINTS[k % len(POINTS)] for k in range(MOVES)]
        calls = [
            asyncio.create_task(
                client.move_point(system_id=s, point_id=p, moves=[MoveTo(position=(k, 0))])
            )
            for k, (s, p) in enumerate(sent)
        ]
        js = nc.jetstream()
        await stored(js, provisioner.stream, MOVES)

        # The process that died: it fetched a batch and was killed before committing it.
        dead = await js.pull_subscribe_bind(durable=consumer, stream=provisioner.stream)
        held = []
        while len(held) < HELD:
            held += await dead.fetch(HELD - len(held), timeout=5)
        await dead.unsubscribe()
        info = await js.consumer_info(provisioner.stream, consumer)
        assert info.num_ack_pending == HELD

        restarted = spawn_worker(
            nats_server,
            stream=provisioner.stream,
            database_url=database_url,
            member="w",
            incarnation="1",
            log=tmp_path / "restarted.log",
        )
        try:
            moved: list[Point] = await asyncio.gather(*calls)
            by_point: dict[tuple[str, str], list[int]] = {}
            for (s, p), point in zip(sent, moved, strict=True):
                by_point.setdefault((s, p), []).append(point.version)
            for (s, _p), versions in by_point.items():
                assert versions == sorted(versions), (
                    f"{s}: moves applied out of stream order "
                    f"(held {HELD} unsettled deliveries at the kill)"
                )
            last = {pt: k for k, pt in enumerate(sent)}
            for (s, p), k in last.items():
                point = await client.get_point(system_id=s, point_id=p)
                assert point.coordinates == (float(k), 0.0), f"{s}: stale final position"
                assert point.version == 1 + MOVES // len(POINTS)
            log = (tmp_path / "restarted.log").read_text()
            assert "rewound it to stream sequence" in log, log
        finally:
            restarted.kill()
            await asyncio.to_thread(restarted.wait, 10)


async def stored(js: JetStreamContext, stream: str, count: int, timeout: float = 20.0) -> None:
    """Wait until the stream holds ``count`` messages (every publish landed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await js.stream_info(stream)).state.messages < count:
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} stored"
        await asyncio.sleep(0.05)
