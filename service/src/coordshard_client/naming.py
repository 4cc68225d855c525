"""Names shared by the engine that creates consumers and the workers that bind to them.

A consumer belongs to one *incarnation* of a member: the pod name plus its UID
(or, in local mode, a process generation). A restarted pod therefore gets a
new consumer name, which matters for fencing: acks carry no token, so a
re-created consumer under the old name would accept a zombie's late acks.

The consumer name is also the member id the planner works with, so the state
in NATS describes itself: list the group's consumers and you have the
assignment in force.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "consumer_name", "validate_name"]

DEFAULT_STREAM: Final = "COORDINATE"
DEFAULT_GROUP: Final = "coordinate"
MAX_NAME: Final = 96
"""Longest consumer name we make (NATS allows more; file stores prefer short names)."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_VALID: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe stream or group name, else raise ValueError."""
    if not _VALID.match(value) or len(value) > 32:
        raise ValueError(f"{what} {value!r} must be 1-32 characters of [A-Za-z0-9_-]")
    return value


def consumer_name(*, group: str, member: str, incarnation: str) -> str:
    """The durable consumer name of one member incarnation.

    ``<group>_<member>_<10 hex of blake2b(incarnation)>``, with characters NATS
    does not allow in names replaced by ``-`` and the member part truncated so
    the whole stays within ``MAX_NAME``. Deterministic: the engine and the
    worker compute it independently.
    """
    validate_name(group, what="group")
    if not member or not incarnation:
        raise ValueError("member and incarnation must be non-empty")
    digest = hashlib.blake2b(incarnation.encode(), digest_size=5).hexdigest()
    safe_member = _UNSAFE.sub("-", member)
    room = MAX_NAME - len(group) - len(digest) - 2
    return f"{group}_{safe_member[:room]}_{digest}"
