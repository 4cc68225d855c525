"""The one text form of shard sets, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordshard_operator.rebalancer.ranges import format_ranges, parse_ranges


@pytest.mark.parametrize(
    ("shards", "text"),
    [([], ""), ([3], "3"), ([0, 1, 2, 5], "0-2,5"), ([7, 5, 6, 1], "1,5-7"), ([2, 2, 3], "2-3")],
)
def test_format_ranges(shards: list[int], text: str) -> None:
    assert format_ranges(shards) == text


@given(st.sets(st.integers(min_value=0, max_value=4095), max_size=300))
def test_parse_is_the_inverse_of_format(shards: set[int]) -> None:
    assert parse_ranges(format_ranges(shards)) == sorted(shards)


@pytest.mark.parametrize("text", ["a", "1-", "-1", "3-1", "1,x-2", " 1"])
def test_parse_refuses_what_format_never_writes(text: str) -> None:
    with pytest.raises(ValueError, match="not a shard range"):
        parse_ranges(text)
