from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordshard_client.subjects import (
    MAX_SHARDS,
    InvalidSubjectError,
    command_subject,
    fnv1a_32,
    parse_shard_filter,
    parse_subject,
    shard_filter,
    shard_of,
    shards_of_filters,
    validate_token,
)

tokens = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"],
        blacklist_characters=".*>\t\n\r\x0b\x0c\x85",
    ),
    min_size=1,
    max_size=30,
).filter(lambda t: len(t.encode()) <= 128)


@pytest.mark.parametrize(
    ("system_id", "shards", "expected"),
    [
        pytest.param("sys-1", 16, 0, id="sys-1"),
        pytest.param("sys-2", 16, 9, id="sys-2"),
        pytest.param("a", 16, 12, id="a"),
        pytest.param("anything", 1, 0, id="one-shard"),
    ],
)
def test_shard_of_known_vectors(system_id: str, shards: int, expected: int) -> None:
    assert shard_of(system_id, shards) == expected


NON_ASCII_IDS = ["é", "système-1", "東京", "🚀-rocket", "Ωmega", "naïve:ü"]
"""System ids whose UTF-8 bytes differ from any one-byte-per-character encoding."""


def _reference_fnv1a_32(system_id: str) -> int:
    """FNV-1a 32 over the id's UTF-8 bytes, written out from the published definition."""
    h = 2166136261
    for byte in system_id.encode("utf-8"):
        h = ((h ^ byte) * 16777619) % 2**32
    return h


@pytest.mark.parametrize("system_id", NON_ASCII_IDS)
@pytest.mark.parametrize("shards", [16, 1024, 4096])
def test_shard_of_hashes_the_utf8_bytes_of_non_ascii_ids(system_id: str, shards: int) -> None:
    assert shard_of(system_id, shards) == _reference_fnv1a_32(system_id) % shards


@pytest.mark.parametrize(
    ("system_id", "shards", "expected"),
    [
        # Checked against nats-server's {{partition(N, k)}} by the partition test,
        # which maps these same ids on a real server.
        pytest.param("é", 1024, 193, id="e-acute"),
        pytest.param("système-1", 16, 13, id="latin"),
        pytest.param("東京", 1024, 879, id="cjk"),
        pytest.param("🚀-rocket", 1024, 37, id="emoji"),
        pytest.param("Ωmega", 16, 14, id="greek"),
    ],
)
def test_shard_of_known_non_ascii_vectors(system_id: str, shards: int, expected: int) -> None:
    assert shard_of(system_id, shards) == expected


def test_fnv1a_reference_values() -> None:
    # Published FNV-1a 32-bit test vectors.
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "tab\there", "x" * 129])
def test_invalid_system_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSubjectError):
        shard_of(bad, 16)


@pytest.mark.parametrize("shards", [0, -1, 4097])
def test_shard_count_out_of_range_is_refused(shards: int) -> None:
    with pytest.raises(ValueError, match="shard count"):
        shard_of("sys-1", shards)


@given(system_id=tokens, shards=st.integers(1, 4096), op=st.sampled_from(["create-point", "move"]))
def test_subject_round_trip(system_id: str, shards: int, op: str) -> None:
    built = command_subject(system_id=system_id, op=op, shards=shards)
    parsed = parse_subject(str(built))
    assert parsed == built
    assert 0 <= parsed.shard < shards
    assert validate_token(system_id) == system_id


@pytest.mark.parametrize(
    "subject",
    [
        "other.1.sys.op",
        "coordinate.cmd.1.sys",
        "coordinate.cmd.01.sys.op",
        "coordinate.cmd.\u00b2.sys.op",
        "coordinate.cmd.x.sys.op",
        "coordinate.cmd.1.sys.op.extra",
    ],
)
def test_parse_rejects_malformed_subjects(subject: str) -> None:
    with pytest.raises(InvalidSubjectError):
        parse_subject(subject)


def test_custom_prefix_and_filter() -> None:
    built = command_subject(system_id="sys-2", op="get-system", shards=16, prefix="acme.geo")
    assert str(built) == "acme.geo.9.sys-2.get-system"
    assert parse_subject(str(built), prefix="acme.geo") == built
    assert shard_filter(9, prefix="acme.geo") == "acme.geo.9.>"
    with pytest.raises(InvalidSubjectError):
        command_subject(system_id="s", op="x", shards=4, prefix="bad..prefix")


@pytest.mark.parametrize("prefix", ["coordinate.cmd", "acme.geo", "x"])
def test_shard_filter_round_trips_for_every_shard(prefix: str) -> None:
    for shard in range(MAX_SHARDS):
        assert parse_shard_filter(shard_filter(shard, prefix=prefix), prefix=prefix) == shard


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("coordinate.cmd.01.>", id="leading-zero"),
        pytest.param("coordinate.cmd.00.>", id="double-zero"),
        pytest.param("coordinate.cmd.-1.>", id="negative"),
        pytest.param("coordinate.cmd.+1.>", id="plus-sign"),
        pytest.param("coordinate.cmd. 1.>", id="leading-space"),
        pytest.param("coordinate.cmd.1 .>", id="trailing-space"),
        pytest.param("coordinate.cmd.1_0.>", id="underscore"),
        pytest.param("coordinate.cmd.\u0661.>", id="non-ascii-digit"),
        pytest.param("coordinate.cmd.\u00b2.>", id="superscript"),
        pytest.param("coordinate.cmd..>", id="empty-shard"),
        pytest.param("coordinate.cmd.>", id="no-shard"),
        pytest.param("other.cmd.1.>", id="other-prefix"),
        pytest.param("coordinate.cmdx.1.>", id="prefix-not-on-a-dot"),
        pytest.param("acme.coordinate.cmd.1.>", id="prefix-not-at-start"),
        pytest.param("coordinate.cmd.1", id="no-wildcard"),
        pytest.param("coordinate.cmd.1.", id="no-wildcard-token"),
        pytest.param("coordinate.cmd.1.*", id="star-not-gt"),
        pytest.param("coordinate.cmd.1.sys.>", id="narrower"),
        pytest.param("coordinate.cmd.1.>.x", id="tail-after-gt"),
        pytest.param("coordinate.cmd.*.>", id="any-shard"),
        pytest.param("", id="empty"),
    ],
)
def test_parse_shard_filter_refuses_what_shard_filter_never_writes(subject: str) -> None:
    assert parse_shard_filter(subject) is None


def test_parse_shard_filter_takes_the_prefix_it_is_given() -> None:
    assert parse_shard_filter("acme.geo.7.>", prefix="acme.geo") == 7
    assert parse_shard_filter("acme.geo.7.>") is None
    assert parse_shard_filter("coordinate.cmd.7.>", prefix="acme.geo") is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param([], (), id="none"),
        pytest.param(["p.3.>", "p.0.>", "p.12.>"], (0, 3, 12), id="sorted"),
        pytest.param(["p.3.>", "p.03.>"], None, id="one-not-canonical"),
        pytest.param(["p.3.>", "q.4.>"], None, id="one-foreign"),
    ],
)
def test_shards_of_filters_is_all_or_none(
    filters: list[str], expected: tuple[int, ...] | None
) -> None:
    assert shards_of_filters(filters, prefix="p") == expected


def test_consumer_names_are_per_incarnation_and_nats_safe() -> None:
    from coordshard_client.naming import member_id

    a1 = member_id(group="coordinate", member="worker-0", incarnation="uid-1")
    a2 = member_id(group="coordinate", member="worker-0", incarnation="uid-2")
    assert a1 != a2 and a1.startswith("coordinate_worker-0_")
    odd = member_id(group="g", member="pod.with*odd>chars " + "x" * 200, incarnation="u")
    assert len(odd) <= 96 and all(c.isalnum() or c in "_-" for c in odd)
    with pytest.raises(ValueError):
        member_id(group="bad.group", member="m", incarnation="u")


def test_a_consumer_name_is_its_member_id_and_a_generation() -> None:
    from coordshard_client.naming import MAX_NAME, consumer_name, generation_of, member_id

    a = member_id(group="g", member="a", incarnation="1")
    assert generation_of(consumer_name(a, generation=7), member=a) == 7
    assert generation_of(a, member=a) == 0  # made before generations
    # Another member whose name starts like ours, or a name that is ours plus more: not ours.
    other = member_id(group="g", member=a.removeprefix("g_") + "_g7", incarnation="1")
    assert generation_of(consumer_name(other, generation=1), member=a) is None
    assert generation_of(f"{a}_g7x", member=a) is None
    assert generation_of(f"{a}_g07", member=a) is None
    longest = member_id(group="g" * 32, member="m" * 300, incarnation="u")
    assert len(consumer_name(longest, generation=10**12 - 1)) <= MAX_NAME
    with pytest.raises(ValueError):
        consumer_name(a, generation=0)
