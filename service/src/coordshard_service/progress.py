"""Whether the serving loop is alive and moving: what readiness and liveness follow.

A worker can be connected, bound and answering HTTP while it serves nothing: a
batch held for ever (the store refuses it), a settle retried in a loop, a NATS
reader that died so every pull and request goes unanswered. ``Progress`` is fed
by the loop itself and says how long it has been stuck:

- the loop has not come round (a fetch returned, a bind poll ended) for a while;
- while bound, no answer about our consumer has come for a while (the loop
  re-reads it at least once a second, so silence means NATS does not answer us);
- while the consumer has messages for us (``num_pending`` + ``num_ack_pending``),
  none has been settled for a while.

Pure bookkeeping; ``now`` comes from ``time.monotonic`` unless given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Progress"]


@dataclass
class Progress:
    """The serving loop's heartbeat; ``stuck`` says for how long and why it stopped."""

    _now: float = field(default_factory=time.monotonic)
    beat_at: float = 0.0
    """The loop last came round."""
    heard_at: float = 0.0
    """Our consumer was last read (while bound)."""
    settled_at: float = 0.0
    """A batch was last settled, or the consumer last had nothing for us."""
    owed: int = 0
    """Messages the consumer has for us (pending + ack pending), as last read."""
    bound: bool = False

    def __post_init__(self) -> None:
        self.beat_at = self.heard_at = self.settled_at = self._now

    def beat(self, now: float | None = None) -> None:
        """The loop came round."""
        self.beat_at = time.monotonic() if now is None else now

    def bind(self, bound: bool, now: float | None = None) -> None:
        """Bound to our consumer (or not any more): start the consumer clocks afresh."""
        now = time.monotonic() if now is None else now
        self.bound = bound
        self.heard_at = self.settled_at = self.beat_at = now
        self.owed = 0

    def heard(self, *, pending: int, ack_pending: int, now: float | None = None) -> None:
        """Our consumer was read: it has ``pending`` undelivered and ``ack_pending`` unacked."""
        now = time.monotonic() if now is None else now
        self.heard_at = now
        self.owed = pending + ack_pending
        if self.owed == 0:
            self.settled_at = now

    def settled(self, now: float | None = None) -> None:
        """A batch was settled (answered and acked)."""
        self.settled_at = time.monotonic() if now is None else now

    def stuck(self, now: float | None = None) -> tuple[float, str]:
        """How long the loop has been stuck (0 when moving), and why."""
        now = time.monotonic() if now is None else now
        worst = (now - self.beat_at, "the pull loop has not come round")
        if self.bound:
            worst = max(worst, (now - self.heard_at, "no answer from NATS about our consumer"))
            if self.owed:
                worst = max(
                    worst, (now - self.settled_at, f"{self.owed} messages owed, none settled")
                )
        return worst
