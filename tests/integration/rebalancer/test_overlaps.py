"""Two consumers of the group claiming one shard, held by a real nats-server.

A work queue refuses the second consumer of a subject, except while the server
recovers a stream (nats-server commit 49faba9, issue #4957): what its store
holds comes back unchecked. That is how a consumer the engine deleted, or one
it made from a reading that missed another, can stand beside the one that
replaced it after a node restart or a leader change on R3. These tests put
such a consumer in the stopped server's store (a copy of a real one, renamed
and given another owner) and let the server recover it.

Before the fix a pass over that reading raised ``InvalidAssignmentError:
previous assignment gives shard 0 to both ...`` for good (the CI flake of
test_kill9_of_a_cluster_node_with_an_r3_stream), or, with both consumers one
member's, left the overlap in place.
"""

from __future__ import annotations

import json

import nats
import pytest

from coordshard_client.naming import consumer_name
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.handoff import (
    META_INCARNATION,
    META_MEMBER,
    Engine,
    GroupConfig,
    Layout,
    MemberInfo,
)
from coordshard_operator.rebalancer.passes import Pass, run_pass

from ..conftest import wait_for_jetstream

pytestmark = pytest.mark.integration

SHARDS = 16
STREAM = "OVL"
MEMBERS = {m.id: m for m in (MemberInfo.of(group="g", member=n, incarnation="1")
                                   for n in ("a", "b"))}  # fmt: skip


def config(layout: Layout) -> GroupConfig:
    return GroupConfig(
        stream=STREAM, subject_prefix="o.cmd", group="g", shards=SHARDS, layout=layout
    )


def clone(server: NatsServer, source: str, *, owner: MemberInfo, generation: int) -> str:
    """Copy consumer ``source`` in the stopped server's store as ``owner``'s, newer."""
    obs = server.store_dir / "jetstream" / "$G" / "streams" / STREAM / "obs"
    name = consumer_name(owner.id, generation=generation)
    target = obs / name
    target.mkdir()
    for f in (obs / source).iterdir():
        if f.is_file():
            (target / f.name).write_bytes(f.read_bytes())
    meta_file = target / "meta.inf"
    meta = json.loads(meta_file.read_text())
    meta["Name"] = meta["name"] = meta["durable_name"] = name
    meta["metadata"] = {
        **meta["metadata"],
        META_MEMBER: owner.name,
        META_INCARNATION: owner.incarnation,
    }
    meta_file.write_text(json.dumps(meta))
    return name


async def one_pass(server: NatsServer, layout: Layout, epoch: int) -> tuple[Pass, list[str]]:
    """A pass of a fresh engine (an operator after a restart); and then every
    consumer's claims on the server, one entry per (consumer, shard)."""
    nc = await nats.connect(server.url)
    try:
        await wait_for_jetstream(nc)
        engine = Engine(nc.jetstream(), config(layout))
        await engine.ensure_stream()
        done = await run_pass(engine, shards=SHARDS, members=MEMBERS, epoch=epoch)
        # Read from the server itself: a filter is a shard (shards) or a block (blocks;
        # K = N here), so every one must be there exactly once.
        infos = await nc.jetstream().consumers_info(STREAM)
        claims = sorted(f"{c.name}:{f}" for c in infos for f in c.config.filter_subjects or ())
        filters = sorted(claim.partition(":")[2] for claim in claims)
        assert len(set(filters)) == len(filters) == SHARDS, claims
        return done, claims
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("layout", "owner"), [("blocks", "b"), ("shards", "b"), ("blocks", "a"), ("shards", "a")]
)
async def test_a_recovered_overlap_is_retired_before_anything_is_granted(
    nats_server: NatsServer, layout: Layout, owner: str
) -> None:
    first, _ = await one_pass(nats_server, layout, epoch=1)
    assert first.report is not None and first.report.created_names
    a = next(m for m in MEMBERS.values() if m.name == "a")
    made = zip(first.report.created, first.report.created_names, strict=True)
    source = next(name for mid, name in made if mid == a.id)
    nats_server.stop()
    twin = clone(
        nats_server,
        source,
        owner=next(m for m in MEMBERS.values() if m.name == owner),
        generation=9,
    )
    nats_server.start()

    done, claims = await one_pass(nats_server, layout, epoch=2)
    assert done.report is not None
    assert done.report.contested == (twin,)
    assert twin in done.observed.contested
    assert all(not claim.startswith(f"{twin}:") for claim in claims)
    # The older claim stood: a keeps what it had, nothing else moved.
    assert done.plan.balance.assignment == first.plan.balance.assignment


async def test_removing_the_group_deletes_a_contested_consumer_too(
    nats_server: NatsServer,
) -> None:
    first, _ = await one_pass(nats_server, "blocks", epoch=1)
    assert first.report is not None
    b = next(m for m in MEMBERS.values() if m.name == "b")
    nats_server.stop()
    clone(nats_server, first.report.created_names[0], owner=b, generation=9)
    nats_server.start()
    nc = await nats.connect(nats_server.url)
    try:
        await wait_for_jetstream(nc)
        engine = Engine(nc.jetstream(), config("blocks"))
        await engine.ensure_stream()
        await engine.remove_group()
        assert await nc.jetstream().consumers_info(STREAM) == []
    finally:
        await nc.close()
