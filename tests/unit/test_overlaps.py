"""Which of two consumers claiming one shard stands: the oldest claim."""

from __future__ import annotations

from coordshard_operator.rebalancer.overlaps import Claim, contested


def test_no_overlap_retires_nothing() -> None:
    assert contested([Claim("x", (0, 1), 1, 1), Claim("y", (2,), 2, 2)]) == ()


def test_the_newer_generation_is_retired_whatever_the_order() -> None:
    old, new = Claim("b_g1", (0, 1), 1, 1), Claim("a_g2", (1, 2), 2, 2)
    assert contested([old, new]) == contested([new, old]) == ("a_g2",)


def test_epoch_then_name_break_a_tie_of_generations() -> None:
    assert contested([Claim("x", (0,), 3, 5), Claim("y", (0,), 3, 4)]) == ("x",)
    assert contested([Claim("y", (0,), 3, 4), Claim("x", (0,), 3, 4)]) == ("y",)


def test_a_retired_claim_does_not_block_the_ones_after_it() -> None:
    # y is retired for shard 1; z overlaps only y, so z keeps 2 and 3.
    claims = [Claim("x", (0, 1), 1, 1), Claim("y", (1, 2), 2, 2), Claim("z", (2, 3), 3, 3)]
    assert contested(claims) == ("y",)
