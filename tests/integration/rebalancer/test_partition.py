"""shard_of() must agree with nats-server's own {{partition(N, k)}} mapping."""

from __future__ import annotations

import random
import string

import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, SubjectTransform

from coordshard_client.subjects import (
    block_transform,
    blocks_of,
    is_owned_subject,
    parse_subject,
    shard_of,
    stream_subjects,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("shards", [16, 1024])
async def test_shard_of_matches_server_partition(js: JetStreamContext, shards: int) -> None:
    rng = random.Random(shards)
    alphabet = string.ascii_letters + string.digits + "-_:é"
    ids = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(2000)})
    # Multi-byte UTF-8 ids too, the unit tests' non-ASCII vectors among them.
    ids += ["sys-1", "sys-2", "a", "é", "système-1", "東京", "🚀-rocket", "Ωmega", "naïve:ü"]
    ids += ["".join(rng.choices("éüΩ東京🚀ß", k=rng.randint(1, 8))) for _ in range(200)]
    ids = sorted(set(ids))
    await js.add_stream(
        StreamConfig(
            name=f"PART{shards}",
            subjects=["in.*"],
            subject_transform=SubjectTransform(
                src="in.*", dest=f"out.{{{{partition({shards},1)}}}}.{{{{wildcard(1)}}}}"
            ),
        )
    )
    for system_id in ids:
        await js.publish(f"in.{system_id}", b"")
    mismatches = []
    for seq, system_id in enumerate(ids, start=1):
        msg = await js.get_msg(f"PART{shards}", seq)
        _, server_shard, server_id = msg.subject.split(".")
        assert server_id == system_id
        if int(server_shard) != shard_of(system_id, shards):
            mismatches.append((system_id, server_shard))
    assert mismatches == []
    assert len(ids) > 1000


@pytest.mark.parametrize("shards", [16, 1000, 4096])
async def test_block_transform_stores_shard_mod_blocks(js: JetStreamContext, shards: int) -> None:
    """The stream's block transform stores each command under block ``shard % K``: the
    equality every layout over blocks rests on (K divides N, so fnv % K == fnv % N % K)."""
    blocks = blocks_of(shards)
    src, dest = block_transform(blocks, prefix="blk")
    stream = f"BLK{shards}"
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=stream_subjects(shards, prefix="blk"),
            subject_transform=SubjectTransform(src=src, dest=dest),
        )
    )
    rng = random.Random(shards)
    ids = sorted({f"s{rng.randrange(10**9)}" for _ in range(600)} | {"é", "東京"})
    for system_id in ids:
        await js.publish(f"blk.{shard_of(system_id, shards)}.{system_id}.move-point", b"")
    wrong = []
    for seq, system_id in enumerate(ids, start=1):
        stored = parse_subject((await js.get_msg(stream, seq)).subject, prefix="blk")
        shard = shard_of(system_id, shards)
        if (stored.block, stored.shard, stored.system_id) != (shard % blocks, shard, system_id):
            wrong.append((system_id, stored))
        if not is_owned_subject(str(stored), shards=shards, prefix="blk"):
            wrong.append(("published form not owned", stored))
    assert wrong == []
