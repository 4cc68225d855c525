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

**Blocks.** A stream may also *store* each command under a block token the
server computes: its subject transform (``block_transform``) turns
``<prefix>.<shard>.<id>.<op>`` into ``<prefix>.b.<block>.<shard>.<id>.<op>``
with ``block = partition(K, id)``. Since ``shard = fnv % N`` and K divides N,
``block = shard % K``: block b holds the shards b, b + K, b + 2K, ... Consumers
then filter whole blocks (``block_filter``), so the stream never holds more
than ``MAX_BLOCKS`` filters whatever N is. Publishers never see blocks: the
publish grammar is the same with or without them. ``blocks_of`` is the rule
that picks K for N.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BLOCK_TOKEN",
    "DEFAULT_PREFIX",
    "DEFAULT_REPLY_PREFIX",
    "DEFAULT_SHARDS",
    "MAX_BLOCKS",
    "MAX_REPLY_BYTES",
    "MAX_SHARDS",
    "MIN_BLOCKS",
    "STREAM_META_SHARDS",
    "CommandSubject",
    "InvalidSubjectError",
    "block_filter",
    "block_of",
    "block_transform",
    "blocks_of",
    "command_subject",
    "is_owned_subject",
    "parse_block_filter",
    "parse_shard_filter",
    "parse_subject",
    "recorded_shards",
    "reply_problem",
    "shard_filter",
    "shard_of",
    "shards_of_block",
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
MAX_BLOCKS: Final = 512
"""The most blocks a stream stores its commands under (``blocks_of``): every server cost
that grows with a stream's filters stays bounded by this, whatever N is."""
MIN_BLOCKS: Final = 256
"""Past ``MAX_BLOCKS`` shards, the fewest blocks ``blocks_of`` accepts: enough for 256
members to own a block each."""
BLOCK_TOKEN: Final = "b"
"""The token after the prefix that marks a stored subject with a block token."""
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


def blocks_of(shards: int) -> int:
    """K, the number of blocks a stream of ``shards`` shards stores its commands under.

    ``shards`` itself up to ``MAX_BLOCKS`` (a block is then one shard); past that, the
    largest divisor of ``shards`` not above ``MAX_BLOCKS`` (the server's block must be
    ``shard % K``, which needs K to divide N).

    Raises:
        ValueError: the shard count is out of range, or above ``MAX_BLOCKS`` with no
            divisor from ``MIN_BLOCKS`` to ``MAX_BLOCKS`` (e.g. a prime): too few blocks
            would leave members without work.
    """
    _check_shards(shards)
    if shards <= MAX_BLOCKS:
        return shards
    k = next(k for k in range(MAX_BLOCKS, 0, -1) if shards % k == 0)
    if k < MIN_BLOCKS:
        raise ValueError(
            f"shard count {shards} has no divisor from {MIN_BLOCKS} to {MAX_BLOCKS} "
            f"(its largest up to {MAX_BLOCKS} is {k}): use at most {MAX_BLOCKS} shards, "
            f"or a count with such a divisor (e.g. a multiple of {MAX_BLOCKS}: 1024, 2048, 4096)"
        )
    return k


def block_of(shard: int, blocks: int) -> int:
    """The block that stores ``shard``'s commands: ``shard % blocks``."""
    return shard % blocks


def shards_of_block(block: int, *, shards: int, blocks: int) -> range:
    """The shards block ``block`` holds: ``block, block + blocks, ...`` below ``shards``."""
    if not 0 <= block < blocks:
        raise ValueError(f"block must be in 0..{blocks - 1}, got {block}")
    return range(block, shards, blocks)


def block_transform(blocks: int, *, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """The stream's subject transform (source, destination) that stores commands under
    ``<prefix>.b.<block>.<shard>.<id>.<op>``, the block computed by the server from the id."""
    validate_prefix(prefix)
    if not 1 <= blocks <= MAX_BLOCKS:
        raise ValueError(f"blocks must be between 1 and {MAX_BLOCKS}, got {blocks}")
    dest = (
        f"{prefix}.{BLOCK_TOKEN}.{{{{partition({blocks},2)}}}}"
        ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
    )
    return f"{prefix}.*.*.*", dest


@dataclass(frozen=True, slots=True)
class CommandSubject:
    """A parsed command subject; ``block`` is set when it was stored under a block."""

    prefix: str
    shard: int
    system_id: str
    op: str
    block: int | None = None

    def __str__(self) -> str:
        """The subject as published (without any block token)."""
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
    """Parse ``<prefix>.<shard>.<system_id>.<op>``, or the stored form
    ``<prefix>.b.<block>.<shard>.<system_id>.<op>``; raise InvalidSubjectError otherwise.

    The shard (and block) tokens are checked to be canonical non-negative integers;
    whether they match the system id is for the caller to check (it needs N and K).
    """
    head = prefix + "."
    if not subject.startswith(head):
        raise InvalidSubjectError(
            f"subject {subject!r} does not start with {head!r}", value=subject
        )
    parts = subject[len(head) :].split(".")
    block: int | None = None
    if len(parts) == 5 and parts[0] == BLOCK_TOKEN:
        if not _is_canonical_int(parts[1]):
            raise InvalidSubjectError(
                f"subject {subject!r}: block {parts[1]!r} is not a canonical integer",
                value=subject,
            )
        block = int(parts[1])
        parts = parts[2:]
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
    return CommandSubject(prefix, int(shard_token), system_id, op, block)


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


def is_owned_subject(
    subject: str, *, shards: int, prefix: str = DEFAULT_PREFIX, blocks: int | None = None
) -> bool:
    """Whether a stored ``subject`` is one a consumer of the group can own.

    Without ``blocks``: it matches one of ``stream_subjects(shards, prefix=prefix)``.
    With ``blocks`` (the stream stores under blocks): it is the stored form
    ``<prefix>.b.<block>.<shard>.<id>.<op>`` with ``shard < shards`` and
    ``block == shard % blocks``. The test a message already stored in the stream
    must pass to have an owner; the engine sweeps those that fail it.
    """
    head = prefix + "."
    if not subject.startswith(head):
        return False
    parts = subject[len(head) :].split(".")
    if blocks is not None:
        if len(parts) != 5 or parts[0] != BLOCK_TOKEN or not _is_canonical_int(parts[1]):
            return False
        block, parts = int(parts[1]), parts[2:]
        if not (len(parts) == 3 and all(parts) and _is_canonical_int(parts[0])):
            return False
        return int(parts[0]) < shards and block == block_of(int(parts[0]), blocks)
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


def block_filter(block: int, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The consumer filter subject that selects every command stored under one block."""
    if block < 0:
        raise ValueError(f"block must be >= 0, got {block}")
    return f"{prefix}.{BLOCK_TOKEN}.{block}.>"


def parse_block_filter(subject: str, *, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The block a consumer filter selects: the inverse of ``block_filter``, as strict
    as ``parse_shard_filter`` (None for anything that is not exactly ours)."""
    head = f"{prefix}.{BLOCK_TOKEN}."
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
