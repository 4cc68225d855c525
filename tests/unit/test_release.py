"""When deleting a CR stops waiting for its consumers' removal."""

from __future__ import annotations

from coordshard_operator.kube.handlers import give_up_release


def test_retry_until_the_limit_then_give_up() -> None:
    assert not give_up_release(299.9, 300)
    assert give_up_release(300, 300)
    assert give_up_release(0, 0)


def test_a_negative_limit_retries_for_ever() -> None:
    assert not give_up_release(10**9, -1)
