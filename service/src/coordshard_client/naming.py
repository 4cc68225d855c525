"""Names shared by the engine that creates consumers and the workers that bind to them.

A member *incarnation* is the pod name plus its UID (or, in local mode, a
process generation); ``member_id`` names it, and it is the id the planner
works with. Each consumer the engine creates for a member is named
``<member id>_g<generation>``, the generation being the epoch of the reconcile
that created it, higher than any the group has seen (``consumer_name``).

Why a generation and not just the incarnation: acks carry no token, only the
consumer's name (in the ack subject), so a consumer re-created under an old
name would accept a zombie's late acks. A restarted pod is a new incarnation,
but a process frozen past its grace (SIGSTOP, a long GC or I/O stall, a
paused VM) is fenced and then wakes as the *same* incarnation, and its
member gets a consumer again: under a new generation, so its late acks to the
deleted consumer count on nothing. No consumer name repeats within a group.

Workers therefore do not compute their consumer's name: they look for a
consumer whose name ``generation_of`` their member id (``coordshard_service``
learns of a new one from JetStream's consumer-created advisory). A consumer
named exactly the member id (generation 0) is what engines before
generations made; workers still bind to it.

The consumers describe themselves: their metadata names the member and the
incarnation, so listing the group's consumers gives the assignment in force.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, NewType

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "MemberId",
    "consumer_name",
    "generation_of",
    "member_id",
    "validate_name",
]

DEFAULT_STREAM: Final = "COORDINATE"
DEFAULT_GROUP: Final = "coordinate"
MAX_NAME: Final = 96
"""Longest consumer name we make (NATS allows more; file stores prefer short names)."""
GENERATION_ROOM: Final = 14
"""Characters kept for ``_g<generation>`` (up to 12 digits)."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_VALID: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_GENERATION: Final = re.compile(r"_g([1-9][0-9]{0,11})")


def validate_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe stream or group name, else raise ValueError."""
    if not _VALID.match(value) or len(value) > 32:
        raise ValueError(f"{what} {value!r} must be 1-32 characters of [A-Za-z0-9_-]")
    return value


MemberId = NewType("MemberId", str)
"""One member incarnation's id (``member_id``): what the planner assigns shards to and the
stem of its consumers' names. Not a pod name, not a consumer name."""


def member_id(*, group: str, member: str, incarnation: str) -> MemberId:
    """The id of one member incarnation: the planner's member id and its consumers' stem.

    ``<group>_<member>_<10 hex of blake2b(incarnation)>``, with characters NATS
    does not allow in names replaced by ``-`` and the member part truncated so
    that a consumer name (``consumer_name``) stays within ``MAX_NAME``.
    Deterministic: the engine and the worker compute it independently.
    """
    validate_name(group, what="group")
    if not member or not incarnation:
        raise ValueError("member and incarnation must be non-empty")
    digest = hashlib.blake2b(incarnation.encode(), digest_size=5).hexdigest()
    safe_member = _UNSAFE.sub("-", member)
    room = MAX_NAME - GENERATION_ROOM - len(group) - len(digest) - 2
    return MemberId(f"{group}_{safe_member[:room]}_{digest}")


def consumer_name(member: str, *, generation: int) -> str:
    """The name of the consumer of ``member`` (a ``member_id``) made at ``generation`` (>= 1)."""
    if not 1 <= generation < 10**12:
        raise ValueError(f"generation must be 1..10**12-1, got {generation}")
    return f"{member}_g{generation}"


def generation_of(name: str, *, member: str) -> int | None:
    """The generation of consumer ``name`` if it is one of ``member``'s, else None.

    0 for a consumer named exactly ``member`` (made before generations).
    """
    if name == member:
        return 0
    if not name.startswith(member):
        return None
    found = _GENERATION.fullmatch(name, len(member))
    return int(found.group(1)) if found else None
