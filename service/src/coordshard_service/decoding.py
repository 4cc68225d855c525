"""Turning a delivery into an ``Incoming``, and a consumer's filters into shards.

Both read what the stream stores. A stream without blocks stores a command on
the subject it was published on, ``<prefix>.<shard>.<id>.<op>``, and a consumer
filters single shards (``<prefix>.<shard>.>``). A stream with the block
transform (``coordshard_client.subjects.block_transform``) stores it as
``<prefix>.b.<block>.<shard>.<id>.<op>``, the block computed by the server
(``shard % K``, K = ``blocks_of(N)``), and its consumers ("lanes") filter whole
blocks (``<prefix>.b.<block>.>``). The worker reads both: a lane's shards are
its blocks' shards, and a stored subject whose block is not its shard's (no
server of ours computes one; a hand-written publish to the stored form can) is
dead-lettered like any bad subject.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from pydantic import ValidationError

from coordshard_client.messages import HEADER_KEY, HEADER_REPLY, Envelope, ErrorCode, check_key
from coordshard_client.subjects import (
    DEFAULT_REPLY_PREFIX,
    InvalidSubjectError,
    block_of,
    blocks_of,
    parse_block_filter,
    parse_shard_filter,
    parse_subject,
    reply_problem,
    shard_of,
    shards_of_block,
)
from coordshard_service.commands import Incoming
from coordshard_service.errors import BadMessageError
from coordshard_service.natsconnect import RAW

__all__ = ["decode", "owned_shards"]


def owned_shards(config: ConsumerConfig, *, prefix: str, shards: int) -> set[int]:
    """The shards a consumer's filters name: one per shard filter (``<prefix>.<shard>.>``,
    see ``shard_filter``), every shard of its block per block filter (``<prefix>.b.<block>.>``,
    see ``block_filter``; ``shards`` is the group's N, which fixes the blocks).

    A filter of another form (or a block past the stream's) selects no shard of ours
    and is passed over.
    """
    filters = list(config.filter_subjects or [])
    if config.filter_subject:
        filters.append(config.filter_subject)
    owned: set[int] = set()
    for f in filters:
        block = parse_block_filter(f, prefix=prefix)
        if block is not None:
            owned.update(_shards_of_block(block, shards=shards))
            continue
        shard = parse_shard_filter(f, prefix=prefix)
        if shard is not None:
            owned.add(shard)
    return owned


def _shards_of_block(block: int, *, shards: int) -> range:
    """The shards of one block of a stream of ``shards`` shards; none if it has no such block."""
    try:
        return shards_of_block(block, shards=shards, blocks=blocks_of(shards))
    except ValueError:
        return range(0)


def _reason(error: ValidationError) -> tuple[str, ErrorCode]:
    kinds = {e["type"] for e in error.errors()}
    if "json_invalid" in kinds or "json_type" in kinds:
        return "malformed JSON", ErrorCode.VALIDATION
    if "union_tag_invalid" in kinds:
        return "unknown op", ErrorCode.VALIDATION
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"schema-invalid: {where}: {first['msg']}", ErrorCode.VALIDATION


def decode(
    msg: Msg,
    *,
    prefix: str,
    shards: int,
    max_payload: int,
    stream: str,
    reply_prefix: str = DEFAULT_REPLY_PREFIX,
) -> Incoming:
    """Turn a fetched message into an ``Incoming``: a valid command, or the reason it is bad.

    A reply header that ``reply_problem`` refuses makes the message bad, and it is
    not answered: its reply would go where replies do not belong, cost the
    connection, or fail the settle.

    ``stream``: the stream instance it came from (``StreamInstance.key``). A message
    without a key is keyed by its sequence in that instance, since keys dedupe
    across instances and a new instance's sequence 1 is not the old one's.
    """
    headers = dict(msg.headers or {})
    meta = msg.metadata
    seq = meta.sequence.stream
    published_at = meta.timestamp.timestamp() if meta.timestamp else None
    reply = headers.get(HEADER_REPLY)
    bad_reply = reply_problem(reply, prefix=reply_prefix) if reply is not None else None
    if bad_reply is not None:
        reply = None
    key = headers.get(HEADER_KEY) or headers.get("Nats-Msg-Id") or f"{stream}:seq-{seq}"
    raw_subject: bytes | None = None  # set when the subject is not UTF-8 on the wire
    subject_text = msg.subject
    try:
        msg.subject.encode()
    except UnicodeEncodeError:  # lone surrogates: see natsconnect.WorkerClient
        raw_subject = msg.subject.encode("utf-8", RAW)
        subject_text = raw_subject.decode("utf-8", "backslashreplace")

    def bad(reason: str, shard: int = -1, code: ErrorCode = ErrorCode.VALIDATION) -> Incoming:
        return Incoming(
            stream_seq=seq,
            subject=subject_text,
            shard=shard,
            key=key,
            reply=reply,
            command=None,
            bad=BadMessageError(reason, code=code),
            headers=headers,
            data=msg.data,
            redelivered=meta.num_delivered > 1,
            published_at=published_at,
            consumer=meta.consumer or "",
        )

    if raw_subject is not None:
        # Stored as text with each undecodable byte as \xNN; the reason keeps the bytes.
        return bad(f"subject is not UTF-8: {raw_subject!r}")
    try:
        subject = parse_subject(msg.subject, prefix=prefix)
    except InvalidSubjectError as e:
        return bad(f"bad subject: {e}")
    if bad_reply is not None:
        return bad(f"bad reply subject ({HEADER_REPLY}): {bad_reply}", subject.shard)
    try:
        check_key(key)  # the store keeps it; refuse here what it could not hold
    except ValueError as e:
        header = HEADER_KEY if headers.get(HEADER_KEY) else "Nats-Msg-Id"
        return bad(f"bad {header} header: {e}", subject.shard)
    if len(msg.data) > max_payload:
        return bad(f"oversize payload: {len(msg.data)} bytes > {max_payload}", subject.shard)
    try:
        envelope = Envelope.model_validate_json(msg.data)
    except ValidationError as e:
        reason, code = _reason(e)
        return bad(reason, subject.shard, code)
    command = envelope.command
    if command.op != subject.op or command.system_id != subject.system_id:
        return bad(
            f"subject says {subject.op} {subject.system_id}, "
            f"payload says {command.op} {command.system_id}",
            subject.shard,
        )
    expected = shard_of(subject.system_id, shards)
    if subject.shard != expected:
        return bad(
            f"wrong shard: system {subject.system_id!r} belongs to shard {expected} "
            f"of {shards}, not {subject.shard}",
            subject.shard,
        )
    if subject.block is not None:
        problem = _block_problem(subject.block, shard=subject.shard, shards=shards)
        if problem is not None:
            return bad(problem, subject.shard)
    return Incoming(
        stream_seq=seq,
        subject=msg.subject,
        shard=subject.shard,
        key=key,
        reply=reply,
        command=command,
        headers=headers,
        data=msg.data,  # kept in case the store refuses it (see apply_isolating)
        redelivered=meta.num_delivered > 1,
        published_at=published_at,
        consumer=meta.consumer or "",
    )


def _block_problem(block: int, *, shard: int, shards: int) -> str | None:
    """Why a command stored under ``block`` cannot be shard ``shard``'s, or None if it is."""
    try:
        blocks = blocks_of(shards)
    except ValueError as e:
        return f"stored under block {block}, but {shards} shards have no blocks: {e}"
    expected = block_of(shard, blocks)
    if block != expected:
        return (
            f"wrong block: shard {shard} is stored under block {expected} of {blocks}, not {block}"
        )
    return None
