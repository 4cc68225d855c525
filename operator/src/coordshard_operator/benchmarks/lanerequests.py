"""The requests of one lane hand-off, timed on an idle stream: server cost or the rig's?

``bench scale`` measured the engine's largest request at 1.5-3.9 s with a 100k
backlog, but its rig runs every member's pull loop in one saturated process,
so a reply may wait behind thousands of acks. Here nothing pulls: one fresh
nats-server per cell, a blocks stream (``layoutcases.EngineBlocks``, the
product's layout) holding ``backlog`` messages over all shards, the group's
lanes made by the engine (``run_pass``) for ``members`` members, and then,
``repeats`` times, the requests of one gain, each timed alone:

- ``create all``: a lane over one member's blocks (32 block filters at N ≥ 1024
  with 16 members), ``deliver_policy=all``, through the engine's ``JetStreamApi``
  (the lane it replaces was deleted first, as the fence does);
- ``first delivery``: from that create's reply until a ``fetch(1)`` on the new
  lane returns a message (bind + one pull);
- ``info``, ``stream info``, ``list``: consumer info of the new lane, the
  stream's info, the consumer list the engine's ``observe`` reads;
- ``delete``: the new lane;
- ``create all (raw)``: the same create as one bare ``nc.request``, no nats-py
  JetStream layer, so client parsing is told apart from the server's answer;
- ``subjects list``: the stream info listing every subject stored, which the
  engine's stray sweep (``strays.sweep``) reads at the start of a pass;
- ``create all F1``: one block filter instead of 32. (``deliver_policy=new``,
  the other way to tell "finding stored messages" apart, is refused on a work
  queue: err_code 10101; the backlog of 0 is the comparison instead.)

Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from coordshard_client.subjects import block_filter
from coordshard_operator.benchmarks import Table, int_list
from coordshard_operator.benchmarks.layoutcases import EngineBlocks
from coordshard_operator.benchmarks.layouts import _publish_backlog
from coordshard_operator.local.natsserver import start_server
from coordshard_operator.local.quantiles import reported
from coordshard_operator.rebalancer.jetstream import JetStreamApi, RetryPolicy, consumer_config
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS

__all__ = ["COLUMNS", "KINDS", "ProbeSettings", "measure", "run"]

KINDS = (
    "create all", "first delivery", "info", "stream info", "list", "delete",
    "create all (raw)", "create all F1", "subjects list",
)  # fmt: skip
COLUMNS = [
    "shards",
    "members",
    "lane blocks",
    "backlog",
    "request",
    "samples",
    "p50 ms",
    "p90 ms",
    "max ms",
]


@dataclass(frozen=True)
class ProbeSettings:
    shards: tuple[int, ...] = (1024, 4096)
    backlogs: tuple[int, ...] = (0, 20_000, 100_000)
    members: tuple[int, ...] = (16,)
    """Members whose lanes the engine lays out: the lane re-created has one member's
    blocks, up to ``LANE_BLOCKS`` filters (fewer members, more blocks each)."""
    lane_blocks: tuple[int, ...] = (LANE_BLOCKS,)
    """The lane sizes F to lay the lanes out at (``GroupConfig.lane_blocks``)."""
    repeats: int = 20
    """Repeats of each request per cell: 10 or more give a p90 (``quantiles.reported``)."""


QUICK = ProbeSettings(shards=(1024,), backlogs=(0, 2_000), repeats=3)

_LONG = RetryPolicy(request_timeout_s=60.0)
"""The probe times what the server takes, so no request may time out and be retried."""


async def _timed(samples: dict[str, list[float]], kind: str, op: Awaitable[object]) -> object:
    started = time.perf_counter()
    result = await op
    samples.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
    return result


def _config(name: str, blocks: tuple[int, ...], *, prefix: str, policy: DeliverPolicy,
            member: str) -> ConsumerConfig:  # fmt: skip
    config = consumer_config(
        name=name, filter_subjects=[block_filter(b, prefix=prefix) for b in blocks],
        ack_wait_s=30, max_ack_pending=1000, max_deliver=20,
        metadata={"coordshard.group": "lay", "coordshard.member": member},
    )  # fmt: skip
    config.deliver_policy = policy
    return config


async def _first_delivery(nc: Client, stream: str, name: str) -> None:
    sub = await nc.jetstream().pull_subscribe_bind(durable=name, stream=stream)
    try:
        await sub.fetch(1, timeout=30)  # not acked: the message stays for the next lane
    finally:
        await sub.unsubscribe()


async def _raw_create(nc: Client, stream: str, config: ConsumerConfig) -> None:
    body = json.dumps({"stream_name": stream, "config": config.as_dict()}).encode()
    reply = await nc.request(f"$JS.API.CONSUMER.CREATE.{stream}.{config.name}", body, timeout=60)
    if b'"error"' in reply.data:
        raise RuntimeError(f"create {config.name}: {reply.data[:200]!r}")


async def _cell(
    url: str, *, shards: int, members: int, lane_blocks: int, backlog: int, s: ProbeSettings
) -> dict[str, list[float]]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    stream = "PROBE"
    layout = EngineBlocks(
        stream, shards, [f"m{i}" for i in range(members)], lane_blocks=lane_blocks
    )
    samples: dict[str, list[float]] = {}
    try:
        await layout.create_stream(js)
        await _publish_backlog(js, layout, shards=shards, n=backlog)
        await layout._converge(1)  # the group's lanes, made by the engine; nobody pulls them
        assert layout.engine is not None
        prefix = layout.engine.config.subject_prefix
        api = JetStreamApi(js, retry=_LONG)
        lane, (member_id, _) = sorted(layout.lanes.items())[0]
        blocks = tuple(sorted({s % layout.engine.config.blocks
                               for s in layout.lanes[lane][1]}))  # fmt: skip
        await api.delete_consumer(stream, lane)  # the fence: the lane it replaces goes first
        variants: list[tuple[str, DeliverPolicy, tuple[int, ...]]] = [
            ("create all F1", DeliverPolicy.ALL, blocks[:1]),
        ]  # fmt: skip
        for k in range(s.repeats):
            name = f"{member_id}_p{k}"
            config = _config(name, blocks, prefix=prefix, policy=DeliverPolicy.ALL, member="m0")
            await _timed(samples, "create all", api.put_consumer(stream, config))
            if backlog:
                await _timed(samples, "first delivery", _first_delivery(nc, stream, name))
            await _timed(samples, "info", api.consumer_info(stream, name))
            await _timed(samples, "stream info", api.stream_info(stream))
            await _timed(samples, "list", api.consumers(stream))
            await _timed(samples, "subjects list", api.stream_subjects(stream, subjects_filter=">"))
            await _timed(samples, "delete", api.delete_consumer(stream, name))
            raw = _config(f"{name}r", blocks, prefix=prefix, policy=DeliverPolicy.ALL, member="m0")
            await _timed(samples, "create all (raw)", _raw_create(nc, stream, raw))
            await api.delete_consumer(stream, f"{name}r")
            for kind, policy, bs in variants:
                other = _config(f"{name}v", bs, prefix=prefix, policy=policy, member="m0")
                await _timed(samples, kind, api.put_consumer(stream, other))
                await api.delete_consumer(stream, f"{name}v")
    finally:
        await nc.close()
    return samples


def _row(cell: tuple[int, int, int, int], kind: str, values: list[float]) -> list[object]:
    return [
        *cell, kind, len(values),
        round(statistics.median(values), 1) if values else None,
        reported(values, 0.9, ndigits=1), round(max(values), 1) if values else None,
    ]  # fmt: skip


def measure(s: ProbeSettings, *, progress: bool = True) -> Table:
    table = Table(list(COLUMNS))
    for n, m, f, b in itertools.product(s.shards, s.members, s.lane_blocks, s.backlogs):
        with tempfile.TemporaryDirectory(prefix="bench-lane-requests-") as tmp:
            server = start_server(Path(tmp) / "nats")
            try:
                samples = asyncio.run(
                    _cell(server.url, shards=n, members=m, lane_blocks=f, backlog=b, s=s)
                )
            finally:
                server.kill()
        rows = [_row((n, m, f, b), kind, samples[kind]) for kind in KINDS if kind in samples]
        table.rows += rows
        for kind in KINDS:
            if kind in samples:
                table.samples[f"N={n} M={m} F={f} B={b} {kind}"] = samples[kind]
        if progress:
            sys.stderr.write(Table(list(COLUMNS), rows).markdown() + "\n")
            sys.stderr.flush()
    table.notes.append(
        f"{s.repeats} repeats per request and cell, on an idle stream (no pull loop) of the "
        f"blocks layout, the engine's lanes for the members given; one fresh nats-server per cell. "
        "p90 is '-' below 10 samples."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    base = QUICK if getattr(args, "quick", False) else ProbeSettings()
    backlog = getattr(args, "backlog", None)
    s = ProbeSettings(
        shards=int_list(getattr(args, "shards", None), base.shards),
        members=int_list(getattr(args, "members", None), base.members),
        lane_blocks=int_list(getattr(args, "lane_blocks", None), base.lane_blocks),
        backlogs=(backlog,) if backlog is not None else base.backlogs,
        repeats=getattr(args, "trials", None) or base.repeats,
    )
    return measure(s)
