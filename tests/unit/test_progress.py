"""The serving loop's heartbeat: when a worker counts as stuck, and why."""

from __future__ import annotations

from coordshard_service.progress import Progress


def test_an_idle_bound_loop_that_comes_round_and_hears_its_consumer_is_not_stuck() -> None:
    p = Progress(_now=0.0)
    p.bind(True, now=0.0)
    for t in range(1, 100):
        p.beat(now=float(t))
        p.heard(pending=0, ack_pending=0, now=float(t))
    assert p.stuck(now=99.5)[0] == 0.5


def test_a_loop_that_does_not_come_round_is_stuck() -> None:
    p = Progress(_now=0.0)
    assert p.stuck(now=40.0) == (40.0, "the pull loop has not come round")


def test_messages_owed_and_none_settled_is_stuck_even_while_the_loop_comes_round() -> None:
    p = Progress(_now=0.0)
    p.bind(True, now=0.0)
    for t in range(1, 31):
        p.beat(now=float(t))
        p.heard(pending=5, ack_pending=1, now=float(t))
    assert p.stuck(now=30.0) == (30.0, "6 messages owed, none settled")
    p.settled(now=30.0)
    assert p.stuck(now=30.0)[0] == 0.0


def test_silence_about_our_consumer_counts_only_while_bound() -> None:
    p = Progress(_now=0.0)
    p.bind(True, now=0.0)
    p.beat(now=20.0)
    assert p.stuck(now=20.0) == (20.0, "no answer from NATS about our consumer")
    p.bind(False, now=20.0)
    p.beat(now=40.0)
    assert p.stuck(now=40.0)[0] == 0.0
