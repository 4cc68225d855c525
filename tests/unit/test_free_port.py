"""``free_port`` keeps out of the range outgoing connections draw their local ports from."""

from __future__ import annotations

import socket

import pytest

from coordshard_operator.local import natsserver
from coordshard_operator.local.natsserver import free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    low = natsserver._ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(1024 <= p < low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


class _Scripted:
    """Stands in for the random source: proposes the given ports in order."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def randint(self, low: int, high: int) -> int:
        return self.ports.pop(0)


def test_a_port_in_use_or_handed_out_before_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    given = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        fresh = free_port()
        natsserver._handed_out.discard(fresh)
        monkeypatch.setattr(natsserver, "_random", _Scripted([taken, given, fresh]))
        assert free_port() == fresh
