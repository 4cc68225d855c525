"""The block vocabulary of the subject grammar: K for N, block filters, stored subjects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordshard_client.subjects import (
    MAX_BLOCKS,
    MAX_SHARDS,
    MIN_BLOCKS,
    block_filter,
    block_of,
    block_transform,
    blocks_of,
    is_owned_subject,
    parse_block_filter,
    parse_shard_filter,
    parse_subject,
    shards_of_block,
)


@pytest.mark.parametrize(
    ("shards", "blocks"),
    [(1, 1), (16, 16), (512, 512), (514, 257), (600, 300), (1000, 500), (1024, 512), (4096, 512)],
)
def test_blocks_of(shards: int, blocks: int) -> None:
    assert blocks_of(shards) == blocks


@pytest.mark.parametrize("shards", [513, 4093, 1031 * 2, 0, MAX_SHARDS + 1])
def test_blocks_of_refuses_counts_with_too_few_blocks(shards: int) -> None:
    with pytest.raises(ValueError, match="shard count"):
        blocks_of(shards)


@given(st.integers(min_value=1, max_value=MAX_SHARDS))
def test_blocks_divide_shards_and_stay_bounded(shards: int) -> None:
    try:
        k = blocks_of(shards)
    except ValueError:
        assert shards > MAX_BLOCKS
        return
    assert shards % k == 0
    assert k == shards if shards <= MAX_BLOCKS else MIN_BLOCKS <= k <= MAX_BLOCKS
    covered = sorted(s for b in range(k) for s in shards_of_block(b, shards=shards, blocks=k))
    assert covered == list(range(shards))
    for b in range(k):
        assert all(block_of(s, k) == b for s in shards_of_block(b, shards=shards, blocks=k))


def test_block_filter_round_trips_and_is_strict() -> None:
    assert block_filter(7, prefix="p.q") == "p.q.b.7.>"
    assert parse_block_filter("p.q.b.7.>", prefix="p.q") == 7
    for other in ("p.q.b.07.>", "p.q.b.-1.>", "p.q.7.>", "p.q.b.7.*", "p.q.b.x.>", "p.q.c.7.>"):
        assert parse_block_filter(other, prefix="p.q") is None
    # A block filter is never read as a shard filter, nor the other way round.
    assert parse_shard_filter("p.q.b.7.>", prefix="p.q") is None


def test_transform_names_the_blocks() -> None:
    assert block_transform(512, prefix="c.cmd") == (
        "c.cmd.*.*.*",
        "c.cmd.b.{{partition(512,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}",
    )
    with pytest.raises(ValueError):
        block_transform(MAX_BLOCKS + 1)


def test_parse_subject_reads_the_stored_form() -> None:
    stored = parse_subject("c.cmd.b.5.517.sys-1.move-point", prefix="c.cmd")
    assert (stored.block, stored.shard) == (5, 517)
    assert (stored.system_id, stored.op) == ("sys-1", "move-point")
    assert str(stored) == "c.cmd.517.sys-1.move-point"
    assert parse_subject("c.cmd.517.sys-1.move-point", prefix="c.cmd").block is None


@pytest.mark.parametrize(
    "subject", ["c.cmd.b.05.5.s.op", "c.cmd.b.x.5.s.op", "c.cmd.b.5.s.op", "c.cmd.c.5.5.s.op"]
)
def test_parse_subject_refuses_bad_stored_forms(subject: str) -> None:
    with pytest.raises(ValueError):
        parse_subject(subject, prefix="c.cmd")


@pytest.mark.parametrize(
    ("subject", "owned"),
    [
        ("c.cmd.b.5.517.s.op", True),
        ("c.cmd.b.5.5.s.op", True),
        ("c.cmd.b.6.517.s.op", False),  # block is not shard % K
        ("c.cmd.b.5.4101.s.op", False),  # shard out of range
        ("c.cmd.517.s.op", False),  # the unstored form, on a stream that stores blocks
        ("c.cmd.b.5.517.s", False),
    ],
)
def test_owned_stored_subjects(subject: str, owned: bool) -> None:
    assert is_owned_subject(subject, shards=4096, prefix="c.cmd", blocks=512) is owned
    assert is_owned_subject("c.cmd.517.s.op", shards=4096, prefix="c.cmd") is True
