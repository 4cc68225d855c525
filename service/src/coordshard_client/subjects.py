"""The subject grammar and the shard function: the one place that owns both.

Commands travel on ``<prefix>.<shard>.<system_id>.<op>``. The shard is
``shard_of(system_id, shards)``: FNV-1a 32-bit over the UTF-8 bytes of the
system id, modulo the shard count. That is byte for byte what nats-server
computes for the subject-mapping function ``{{partition(N, k)}}``, so a stream
can do the same mapping server-side with a ``subject_transform`` and the two
always agree (a test checks this against a real server).

The shard count is part of the contract: changing it re-maps almost every key
and only affects messages published afterwards. Treat it as fixed for the
lifetime of a stream. Its default and its bound (``DEFAULT_SHARDS``,
``MAX_SHARDS``), the prefix rule (``validate_prefix``) and the consumer filter
of a shard (``shard_filter`` and its inverse, ``parse_shard_filter``) are
defined here and nowhere else: the SDK, the worker, the operator and the CRD
all follow this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REPLY_PREFIX",
    "DEFAULT_SHARDS",
    "MAX_REPLY_BYTES",
    "MAX_SHARDS",
    "STREAM_META_SHARDS",
    "CommandSubject",
    "InvalidSubjectError",
    "command_subject",
    "is_owned_subject",
    "parse_shard_filter",
    "parse_subject",
    "recorded_shards",
    "reply_problem",
    "shard_filter",
    "shard_of",
    "shards_of_filters",
    "shards_of_stream",
    "stream_subjects",
    "validate_prefix",
    "validate_token",
]

DEFAULT_PREFIX: Final = "coordinate.cmd"
DEFAULT_SHARDS: Final = 16
"""The shard count everything defaults to; it must equal the stream's."""
MAX_SHARDS: Final = 4096
"""The largest shard count: nats-server's ``partition()`` and the CRD allow no more."""
STREAM_META_SHARDS: Final = "coordshard.shards"
"""The stream metadata key that records the group's shard count (decimal), written by
the engine when it creates (or adopts) the stream; every party reads N from it."""
MAX_TOKEN_BYTES: Final = 128
"""System ids and ops are single NATS tokens of at most this many UTF-8 bytes."""

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193
_MASK32: Final = 0xFFFFFFFF

# A NATS subject token may not be empty and may not hold '.', the wildcards
# '*' and '>', whitespace or control characters.
_BAD_TOKEN_CHARS: Final = re.compile(r"[.*>\s\x00-\x1f\x7f]")
_OP_RE: Final = re.compile(r"^[a-z][a-z0-9-]*$")
_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class InvalidSubjectError(ValueError):
    """A subject, token or prefix breaks the grammar; the message says which rule."""

    def __init__(self, message: str, *, value: str) -> None:
        super().__init__(message)
        self.value = value


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bit: the hash behind nats-server's ``partition()``."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return h


def validate_token(value: str, *, what: str = "system id") -> str:
    """Return ``value`` if it is a valid single NATS subject token, else raise."""
    if not isinstance(value, str) or not value:
        raise InvalidSubjectError(f"{what} must be a non-empty string", value=str(value))
    if _BAD_TOKEN_CHARS.search(value):
        raise InvalidSubjectError(
            f"{what} {value!r} is not a single NATS token: "
            "it may not contain '.', '*', '>', whitespace or control characters",
            value=value,
        )
    if len(value.encode()) > MAX_TOKEN_BYTES:
        raise InvalidSubjectError(
            f"{what} {value[:20]!r}... is longer than {MAX_TOKEN_BYTES} bytes", value=value
        )
    return value


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is one or more plain tokens joined by dots, else raise."""
    if not _PREFIX_RE.match(prefix):
        raise InvalidSubjectError(
            f"subject prefix {prefix!r} must be dot-separated tokens of [A-Za-z0-9_-]",
            value=prefix,
        )
    return prefix


def _check_shards(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shard count must be between 1 and {MAX_SHARDS}, got {shards}")


def _is_canonical_int(token: str) -> bool:
    """``token`` is a non-negative integer in plain decimal without leading zeros."""
    return token.isascii() and token.isdigit() and (token == "0" or not token.startswith("0"))


def shard_of(system_id: str, shards: int) -> int:
    """The shard that owns ``system_id`` among ``shards`` shards.

    Args:
        system_id: the key; must be a valid single NATS token.
        shards: the shard count N (1..4096), fixed for the stream's lifetime.

    Returns:
        ``fnv1a_32(system_id.encode()) % shards``, the value nats-server's
        ``{{partition(shards, k)}}`` gives for a subject whose token k is the id.

    Raises:
        InvalidSubjectError: the id is not a valid token.
        ValueError: the shard count is out of range.
    """
    validate_token(system_id)
    _check_shards(shards)
    return fnv1a_32(system_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class CommandSubject:
    """A parsed command subject."""

    prefix: str
    shard: int
    system_id: str
    op: str

    def __str__(self) -> str:
        return f"{self.prefix}.{self.shard}.{self.system_id}.{self.op}"


def command_subject(
    *, system_id: str, op: str, shards: int, prefix: str = DEFAULT_PREFIX
) -> CommandSubject:
    """Build the subject a command for ``system_id`` is published on."""
    validate_prefix(prefix)
    validate_token(op, what="op")
    if not _OP_RE.match(op):
        raise InvalidSubjectError(f"op {op!r} must be lower-case kebab-case", value=op)
    return CommandSubject(prefix, shard_of(system_id, shards), system_id, op)


def parse_subject(subject: str, *, prefix: str = DEFAULT_PREFIX) -> CommandSubject:
    """Parse ``<prefix>.<shard>.<system_id>.<op>``; raise InvalidSubjectError otherwise.

    The shard token is checked to be a canonical non-negative integer; whether it
    matches the system id is for the caller to check (it needs the shard count).
    """
    head = prefix + "."
    if not subject.startswith(head):
        raise InvalidSubjectError(
            f"subject {subject!r} does not start with {head!r}", value=subject
        )
    parts = subject[len(head) :].split(".")
    if len(parts) != 3:
        raise InvalidSubjectError(
            f"subject {subject!r} must be {prefix}.<shard>.<system_id>.<op>", value=subject
        )
    shard_token, system_id, op = parts
    if not _is_canonical_int(shard_token):
        raise InvalidSubjectError(
            f"subject {subject!r}: shard {shard_token!r} is not a canonical integer",
            value=subject,
        )
    validate_token(system_id)
    validate_token(op, what="op")
    return CommandSubject(prefix, int(shard_token), system_id, op)


def stream_subjects(shards: int, *, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The command stream's subjects: exactly those a consumer can own, one per shard.

    ``<prefix>.<s>.*.*`` for ``s`` in ``0..shards-1``. A NATS wildcard matches a
    whole token, so no shorter list can say "a shard token from 0 to N-1 in
    canonical decimal"; with this one the server itself refuses a publish to any
    other subject (``03``, ``-1``, ``x``, ``16`` of 16, too few or too many tokens)
    instead of storing a message no consumer will ever deliver.
    """
    _check_shards(shards)
    return [f"{prefix}.{s}.*.*" for s in range(shards)]


def recorded_shards(metadata: Mapping[str, str] | None) -> int | None:
    """The shard count a stream's metadata records (``STREAM_META_SHARDS``), or None if
    it records none (a stream made before the count was recorded) or an unreadable one."""
    value = (metadata or {}).get(STREAM_META_SHARDS, "")
    if not _is_canonical_int(value) or not 1 <= int(value) <= MAX_SHARDS:
        return None
    return int(value)


def shards_of_stream(
    metadata: Mapping[str, str] | None,
    subjects: Sequence[str] | None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> int | None:
    """The group's N as a stream states it: recorded in its metadata, or else implied by
    subjects that are exactly ``stream_subjects(n, prefix=prefix)`` (a stream made
    before N was recorded); None when neither says (e.g. a catch-all ``<prefix>.>``)."""
    recorded = recorded_shards(metadata)
    if recorded is not None:
        return recorded
    listed = list(subjects or ())
    if 1 <= len(listed) <= MAX_SHARDS and listed == stream_subjects(len(listed), prefix=prefix):
        return len(listed)
    return None


def is_owned_subject(subject: str, *, shards: int, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``subject`` matches one of ``stream_subjects(shards, prefix=prefix)``.

    The test a message already stored in the stream must pass to have an owner;
    the engine sweeps those that fail it.
    """
    head = prefix + "."
    if not subject.startswith(head):
        return False
    parts = subject[len(head) :].split(".")
    return len(parts) == 3 and all(parts) and _is_canonical_int(parts[0]) and int(parts[0]) < shards


def shard_filter(shard: int, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The consumer filter subject that selects every command of one shard."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{prefix}.{shard}.>"


def parse_shard_filter(subject: str, *, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The shard a consumer filter selects: the inverse of ``shard_filter``.

    Strict: only exactly ``<prefix>.<shard>.>`` with ``shard`` in canonical
    decimal (no sign, no spaces, no leading zeros) is ours; anything else gives
    None, so a filter someone else wrote is never read as a shard.
    """
    head = prefix + "."
    if not (subject.startswith(head) and subject.endswith(".>")):
        return None
    token = subject[len(head) : -2]
    return int(token) if _is_canonical_int(token) else None


def shards_of_filters(
    filters: Iterable[str], *, prefix: str = DEFAULT_PREFIX
) -> tuple[int, ...] | None:
    """The shards a consumer's filter subjects select, ascending; None if any is not ours.

    None (rather than the shards of the filters that are ours) because a consumer
    with a filter we did not write is not one this grammar can describe.
    """
    shards: list[int] = []
    for f in filters:
        shard = parse_shard_filter(f, prefix=prefix)
        if shard is None:
            return None
        shards.append(shard)
    return tuple(sorted(shards))


DEFAULT_REPLY_PREFIX: Final = "_INBOX"
"""Replies go to subjects under ``<reply prefix>.>``: nats-py's own inbox prefix, which
the SDK's inboxes (``Client.new_inbox()``) start with."""
MAX_REPLY_BYTES: Final = 256
"""Longest reply subject a worker publishes to. nats-server closes a connection whose
``PUB <subject> <size>`` control line exceeds its limit (4096 bytes by default), and
nats-py then gives up on it for good; the SDK's replies are about 40 bytes."""
_REPLY_TOKEN_RE: Final = re.compile(r"^[!-~]+$")
"""A reply token is printable ASCII (no space, no control character), and no wildcard."""


def reply_problem(subject: str, *, prefix: str = DEFAULT_REPLY_PREFIX) -> str | None:
    """Why a worker must not publish to ``subject`` as a reply, or None if it may.

    A reply subject must be ``<prefix>.<token>[.<token>...]``, at most
    ``MAX_REPLY_BYTES`` long, each token printable ASCII without whitespace or
    wildcards. Anything else is refused rather than published: outside the
    prefix it would land on another stream's or our own command subjects, and
    what nats-py or the server refuses would cost the connection or the ack.
    """
    size = len(subject.encode("utf-8", "surrogateescape"))
    if size > MAX_REPLY_BYTES:
        return f"{size} bytes long, more than {MAX_REPLY_BYTES}"
    if not subject.startswith(prefix + "."):
        return f"{subject!r} is not under {prefix}.>"
    for token in subject[len(prefix) + 1 :].split("."):
        if not _REPLY_TOKEN_RE.match(token) or "*" in token or ">" in token:
            return (
                f"{subject!r} is not a NATS subject: a token is empty or holds "
                "whitespace, a wildcard or a character that is not printable ASCII"
            )
    return None
