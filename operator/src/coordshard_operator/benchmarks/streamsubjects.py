"""What a stream that lists one subject per shard costs, against one wildcard.

The command stream used to capture ``<prefix>.>``, which stores messages no
consumer can own (shard ``16`` of 16, ``03``, ``x``, too few tokens). Listing
exactly ``<prefix>.<s>.*.*`` for every shard makes the server refuse them at
publish, at the price of a stream with up to 4096 subjects (the CRD's limit).
For each ``--shards`` value and each layout, on a fresh single server:

- *stream create* / *update*: one create, then one update to the same config
  (what ``ensure_stream`` sends when it rewrites the subjects);
- *upgrade*: an update of a ``<prefix>.>`` stream to the per-shard list;
- *consumers*: 8 members' consumers created, each with N/8 shard filters;
- *move*: the two updates of a one-shard move (narrow the loser, grow the gainer);
- *publish/s*: ``publish_async`` of commands spread over every shard;
- *sweep*: the engine's check for messages outside the owned set (a stream
  info listing the subjects present), with one message on every shard.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from coordshard_client.subjects import shard_filter, stream_subjects
from coordshard_operator.benchmarks import Table, int_list
from coordshard_operator.local.natsserver import start_server

PREFIX = "bench.cmd"
MEMBERS = 8
DEFAULT_SHARDS = (16, 256, 1024, 4096)
LAYOUTS = ("one wildcard", "per shard")


def _subjects(layout: str, shards: int) -> list[str]:
    return [f"{PREFIX}.>"] if layout == "one wildcard" else stream_subjects(shards, prefix=PREFIX)


def _config(subjects: list[str]) -> StreamConfig:
    return StreamConfig(name="S", subjects=subjects, retention=RetentionPolicy.WORK_QUEUE)


async def _ms(op: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await op()
    return (time.perf_counter() - started) * 1000


def _consumer(name: str, shards: list[int]) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=name,
        ack_policy=AckPolicy.EXPLICIT,
        filter_subjects=[shard_filter(s, prefix=PREFIX) for s in shards],
    )


async def _publish_rate(js: JetStreamContext, shards: int, n: int) -> float:
    payload = b"x" * 200
    started = time.perf_counter()
    for i in range(n):
        await js.publish_async(f"{PREFIX}.{i % shards}.sys-{i % 97}.move-point", payload)
    await js.publish_async_completed()
    return n / (time.perf_counter() - started)


async def _one(url: str, layout: str, shards: int, *, messages: int) -> list[object]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    try:
        subjects = _subjects(layout, shards)
        create = await _ms(lambda: js.add_stream(_config(subjects)))
        update = await _ms(lambda: js.update_stream(_config(subjects)))
        members = min(MEMBERS, shards)
        owned = [list(range(m, shards, members)) for m in range(members)]
        started = time.perf_counter()
        for m, mine in enumerate(owned):
            await js.add_consumer("S", _consumer(f"c{m}", mine))
        consumers = (time.perf_counter() - started) * 1000
        moved = owned[0][-1]
        narrow = await _ms(lambda: js.add_consumer("S", _consumer("c0", owned[0][:-1])))
        grow = await _ms(lambda: js.add_consumer("S", _consumer("c1", [*owned[1], moved])))
        rate = await _publish_rate(js, shards, messages)
        sweep = statistics.median(
            [
                await _ms(lambda: js.stream_info("S", subjects_filter=f"{PREFIX}.>"))
                for _ in range(5)
            ]
        )
        await js.delete_stream("S")
        upgrade = "-"
        if layout == "per shard":
            await js.add_stream(_config([f"{PREFIX}.>"]))
            upgrade = f"{await _ms(lambda: js.update_stream(_config(subjects))):.1f}"
            await js.delete_stream("S")
        return [
            shards,
            layout,
            round(create, 1),
            round(update, 1),
            upgrade,
            round(consumers, 1),
            round(narrow + grow, 1),
            round(rate),
            round(sweep, 1),
        ]
    finally:
        await nc.close()


async def _run(shards: tuple[int, ...], *, messages: int) -> Table:
    table = Table(
        [
            "shards",
            "stream subjects",
            "create ms",
            "update ms",
            "upgrade ms",
            f"{MEMBERS} consumers ms",
            "move ms",
            "publish/s",
            "sweep ms",
        ]
    )
    for n in shards:
        for layout in LAYOUTS:
            with tempfile.TemporaryDirectory(prefix="bench-subjects-") as tmp:
                server = start_server(Path(tmp) / "nats")
                try:
                    table.rows.append(await _one(server.url, layout, n, messages=messages))
                finally:
                    server.kill()
    table.notes.append(
        f"{messages} messages of 200 bytes per publish run; a fresh nats-server per row; "
        "sweep = median of 5 stream infos listing the subjects present."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    shards = int_list(getattr(args, "shards", None), DEFAULT_SHARDS)
    return asyncio.run(_run(shards, messages=5_000 if args.quick else 20_000))
