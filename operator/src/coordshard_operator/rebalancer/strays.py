"""Messages the stream holds on subjects no consumer can own: found and removed.

The stream's subjects are exactly the shards' own (``subjects.stream_subjects``),
so the server refuses a publish anywhere else. What it cannot refuse is what
it stored before its subjects were written: a stream made when it captured
``<prefix>.>`` (shard ``16`` of 16, ``03``, ``x``, too few tokens), or the
shards past a smaller N. No consumer will ever deliver those; left alone they
sit in the work queue for ever and the stream never drains.

So after every write of the stream's subjects, and once per engine (an
operator that restarts cannot know what an earlier one left), the engine
lists the subjects present (one stream info with ``subjects_filter``) and
purges each one that no shard owns. The server sends at most
``SUBJECTS_PAGE`` subjects in one listing; the cost is one request whatever N
is, and proportional to the distinct subjects waiting in the stream. Once a
sweep finds nothing more, no stray can appear until the subjects change again,
so steady state costs nothing. The messages are deleted, not dead-lettered:
the operator has no store, and a message stored under a grammar the worker
refuses carries nothing a worker could apply. Each is logged (subject and
count) and counted by the caller (metric, CR condition).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from coordshard_client.subjects import is_owned_subject
from coordshard_operator.rebalancer.jetstream import JetStreamApi

__all__ = ["SUBJECTS_PAGE", "Swept", "sweep"]

logger = logging.getLogger(__name__)

SUBJECTS_PAGE = 100_000
"""Subjects nats-server lists in one stream info (its ``JSMaxSubjectDetails``)."""
WALK_LIMIT = 1000
"""Messages read per pass to delete a stray subject that holds a wildcard token."""


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep removed."""

    subjects: tuple[str, ...] = ()
    messages: int = 0
    complete: bool = True
    """False when the listing may have left subjects out (a full page, a bounded
    walk): the next pass sweeps again."""


async def sweep(
    api: JetStreamApi, *, stream: str, prefix: str, shards: int, blocks: int | None = None
) -> Swept:
    """Remove every message of ``stream`` on a subject no shard of ``shards`` owns.

    ``blocks``: K on a stream that stores under blocks. It must be given there: its
    stored subjects are ``<prefix>.b.<block>.<shard>.<id>.<op>``, which the plain
    grammar would take for strays, every one of them."""
    info = await api.stream_subjects(stream, subjects_filter=">")
    present = info.state.subjects or {}
    strays = {
        s: n
        for s, n in present.items()
        if not is_owned_subject(s, shards=shards, prefix=prefix, blocks=blocks)
    }
    complete = len(present) < SUBJECTS_PAGE
    removed = 0
    for subject, count in sorted(strays.items()):
        if {"*", ">"} & set(subject.split(".")):
            # A literal subject with a wildcard token: a purge filter would read it
            # as a wildcard and take owned messages too. Delete it by sequence.
            gone, done = await _delete_literal(api, stream, subject, first=info.state.first_seq)
            complete = complete and done
        else:
            await api.purge_subject(stream, subject)
            gone = count
        removed += gone
        logger.warning(
            "stream %s: removed %d message(s) on %r, a subject no shard of %d owns",
            stream,
            gone,
            subject,
            shards,
        )
    return Swept(tuple(sorted(strays)), removed, complete)


async def _delete_literal(
    api: JetStreamApi, stream: str, subject: str, *, first: int
) -> tuple[int, bool]:
    """Delete the messages whose subject is exactly ``subject``; (deleted, finished)."""
    seq, deleted = first, 0
    for _ in range(WALK_LIMIT):
        found = await api.next_message(stream, seq=seq, subjects_filter=subject)
        if found is None:
            return deleted, True
        found_seq, found_subject = found
        if found_subject == subject:
            await api.delete_message(stream, found_seq)
            deleted += 1
        seq = found_seq + 1
    return deleted, False
