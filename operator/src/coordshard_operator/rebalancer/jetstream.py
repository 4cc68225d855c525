"""The boundary to JetStream: every request the engine makes goes through here.

It owns three things: the command stream's shape (``stream_config``, the
compatibility check and the in-place rewrite of its subjects), retries with
backoff for conditions that pass by themselves (a cluster electing a leader
takes ~5 s; a client reconnecting), and the mapping of nats-py errors onto
``coordshard_operator.rebalancer.errors``, done once, here. It also counts
the requests that change consumers, so a caller (and a test) can see that a
converged reconcile changed nothing.

Every consumer operation used here is idempotent (create-or-update, delete,
reset to an explicit sequence, pause, resume), so retrying after a timeout
whose request may have landed is safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
    SubjectTransform,
)

from coordshard_client.serverversion import (
    MIN_SERVER_VERSION,
    announced_version,
    server_version_problem,
)
from coordshard_client.subjects import (
    STREAM_META_SHARDS,
    block_transform,
    recorded_shards,
    stream_subjects,
)
from coordshard_operator.rebalancer.errors import (
    JetStreamApiError,
    JetStreamUnavailableError,
    NatsServerTooOldError,
    NatsUnavailableError,
    StreamMismatchError,
    StreamMissingError,
    TransientError,
)

__all__ = ["MAX_CONSUMERS", "JetStreamApi", "RetryPolicy", "stream_layout"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CONSUMERS = 4096
"""``max_consumers`` of a blocks stream. nats-server 2.15's default is 1000 per stream;
512 members own at least one block each (K >= 256) and have at most
``ceil(blocks / 32) + 1`` = 2 lanes each after a quiet pass (1024 in all); lanes
granted by crashes before the next quiet pass merges them, and a member's retired
and re-created lanes in flight, stay far below 4096."""

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
MESSAGE_NOT_FOUND = 10037
SEQUENCE_NOT_FOUND = 10043
STREAM_UPDATE_TIMEOUT_S = 30.0
"""Timeout of a stream create or update, seconds: with 4096 subjects the server takes
seconds to check them (docs/benchmarks.md), far past one ordinary request's."""
# 503s and these codes mean "no leader / not ready yet": wait and retry.
# 10005, "no suitable peers for placement", is what a cluster answers an R3 create
# while a node is still joining or restarting: not a stream of the wrong shape.
_RETRY_ERR_CODES = frozenset({10005, 10008, 10023})  # no peers yet, not ready, resources


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep retrying requests that fail for a transient reason."""

    deadline_s: float = 20.0
    """Give up (raise the TransientError) after this many seconds; default 20."""
    first_delay_s: float = 0.05
    """First backoff delay in seconds, doubled each retry; default 0.05."""
    max_delay_s: float = 1.0
    """Longest backoff delay in seconds; default 1."""
    request_timeout_s: float = 2.0
    """Timeout of one JetStream API request in seconds; default 2."""


def _map_error(e: Exception, *, what: str, consumer: str | None, stream: str | None) -> Exception:
    """The project error for a nats-py error, or ``e`` itself if it is not one."""
    if isinstance(e, nats.js.errors.APIError):
        if e.err_code == STREAM_NOT_FOUND and stream is not None:
            return StreamMissingError(f"{what}: stream {stream} does not exist", stream=stream)
        if isinstance(e, nats.js.errors.ServiceUnavailableError) or e.err_code in _RETRY_ERR_CODES:
            return JetStreamUnavailableError(f"{what}: JetStream unavailable: {e}")
        return JetStreamApiError(
            f"{what}: {e.description} (code {e.code}, err_code {e.err_code})",
            code=e.code,
            err_code=e.err_code,
            consumer=consumer,
        )
    if isinstance(e, nats.errors.NoRespondersError):
        return JetStreamUnavailableError(f"{what}: no JetStream responders (disabled or electing)")
    if isinstance(e, nats.errors.TimeoutError | asyncio.TimeoutError):
        return NatsUnavailableError(f"{what}: request timed out")
    if isinstance(e, nats.errors.Error):
        return NatsUnavailableError(f"{what}: {e}")
    return e


def rfc3339(moment: datetime) -> str:
    """``moment`` as the RFC 3339 UTC timestamp JetStream expects."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JetStreamApi:
    """JetStream requests with retries, error mapping and a count of consumer changes."""

    def __init__(self, js: JetStreamContext, *, retry: RetryPolicy | None = None) -> None:
        self._js = js
        # nats-py 2.16's add_stream/update_stream take no per-call timeout: a twin
        # context over the same connection carries the longer one stream writes need.
        self._slow_js = JetStreamContext(js._nc, prefix=js._prefix, timeout=STREAM_UPDATE_TIMEOUT_S)
        self.retry = retry or RetryPolicy()
        self.mutations = 0
        """Consumer create/update/delete/reset/pause/resume requests sent so far."""

    async def _call(
        self,
        what: str,
        op: Callable[[], Awaitable[T]],
        *,
        consumer: str | None = None,
        stream: str | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry.deadline_s
        delay = self.retry.first_delay_s
        while True:
            try:
                return await op()
            except Exception as e:
                mapped = _map_error(e, what=what, consumer=consumer, stream=stream)
                if mapped is e and not isinstance(e, TransientError):
                    raise  # a TransientError raised by ``op`` itself is retried as well
                if not isinstance(mapped, TransientError) or loop.time() + delay > deadline:
                    if mapped is e:
                        raise
                    raise mapped from e
                logger.info("retrying %s in %.2fs: %s", what, delay, mapped)
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay = min(delay * 2, self.retry.max_delay_s)

    def check_server(self) -> None:
        """Raise NatsServerTooOldError unless the server we are connected to has every
        feature we use (``coordshard_client.serverversion``). Read from the server's
        INFO, so it is free; called before anything is created, every time (after a
        reconnect the server may be another, older node)."""
        found = announced_version(self._js._nc.connected_server_version)
        problem = server_version_problem(found)
        if problem is not None:
            raise NatsServerTooOldError(
                problem, found=found, needed=".".join(map(str, MIN_SERVER_VERSION))
            )

    # -- stream ---------------------------------------------------------------

    async def stream_info(self, stream: str) -> StreamInfo:
        async def op() -> StreamInfo:
            return await self._js.stream_info(stream)

        return await self._call(f"stream info {stream}", op, stream=stream)

    async def ensure_stream(self, config: StreamConfig) -> tuple[StreamInfo, bool]:
        """Create the stream if missing, or rewrite an existing one's subjects to ``config``'s.

        Returns the stream's info and whether its subjects were written (created or
        rewritten): only then can it hold messages on subjects it no longer takes.
        Anything else that differs (retention, the shard count its metadata records)
        is not ours to change and raises StreamMismatchError, as does a rewrite the
        server refuses (another stream holding some of the subjects). A stream that
        records no shard count (made before it was recorded) is adopted: it gets
        ``config``'s, with its subjects.
        """
        name = config.name
        assert name is not None
        self.check_server()
        try:
            info = await self.stream_info(name)
        except StreamMissingError:

            async def create() -> StreamInfo:
                return await self._slow_js.add_stream(config)

            return await self._refusable(f"create stream {name}", create, name), True
        check_stream(info.config, config)
        wanted_meta = {**(info.config.metadata or {}), **(config.metadata or {})}
        if info.config.subjects == config.subjects and info.config.metadata == wanted_meta:
            return info, False
        if info.config.subjects == config.subjects:
            logger.warning("stream %s: recording its shard count in its metadata", name)
            rewritten = info.config.evolve(metadata=wanted_meta)

            async def record() -> StreamInfo:
                return await self._slow_js.update_stream(rewritten)

            return await self._refusable(f"update stream {name}", record, name), False
        logger.warning(
            "stream %s: rewriting its subjects (%d, was %s) to the %d shards' own",
            name,
            len(config.subjects or []),
            _short(info.config.subjects),
            len(config.subjects or []),
        )
        rewritten = info.config.evolve(subjects=config.subjects, metadata=wanted_meta)

        async def update() -> StreamInfo:
            return await self._slow_js.update_stream(rewritten)

        return await self._refusable(f"update stream {name}", update, name), True

    async def _refusable(self, what: str, op: Callable[[], Awaitable[T]], stream: str) -> T:
        """``op``, with a refusal by the server turned into StreamMismatchError."""
        try:
            return await self._call(what, op)
        except JetStreamApiError as e:
            raise StreamMismatchError(
                f"{what}: the server refused it ({e}); fix or remove the stream, "
                "or the streams whose subjects overlap it, by hand",
                stream=stream,
            ) from e

    async def stream_subjects(self, stream: str, *, subjects_filter: str) -> StreamInfo:
        """The stream's info with a count of messages per subject matching the filter."""

        async def op() -> StreamInfo:
            return await self._js.stream_info(stream, subjects_filter=subjects_filter)

        return await self._call(f"list subjects of {stream}", op, stream=stream)

    async def purge_subject(self, stream: str, subject: str) -> None:
        """Delete every message on ``subject`` (a literal subject: no wildcard in it)."""

        async def op() -> None:
            await self._js.purge_stream(stream, subject=subject)

        await self._call(f"purge {subject} from {stream}", op, stream=stream)

    async def next_message(
        self, stream: str, *, seq: int, subjects_filter: str
    ) -> tuple[int, str] | None:
        """(sequence, subject) of the first message at or after ``seq`` that the filter
        matches, or None if there is none."""

        async def op() -> tuple[int, str]:
            msg = await self._js.get_msg(stream, seq=seq, subject=subjects_filter, next=True)
            return msg.seq or 0, msg.subject or ""

        try:
            return await self._call(f"next message of {stream} from {seq}", op, stream=stream)
        except JetStreamApiError as e:
            if e.err_code == MESSAGE_NOT_FOUND:
                return None
            raise

    async def delete_message(self, stream: str, seq: int) -> None:
        """Delete one message; one already gone counts as deleted."""

        async def op() -> None:
            await self._js.delete_msg(stream, seq)

        try:
            await self._call(f"delete message {seq} of {stream}", op, stream=stream)
        except JetStreamApiError as e:
            if e.err_code != SEQUENCE_NOT_FOUND:
                raise

    # -- consumers ------------------------------------------------------------

    async def consumers(self, stream: str) -> list[ConsumerInfo]:
        """Every consumer of the stream, or JetStreamUnavailableError (retried first).

        A clustered server answers the list with the consumers whose leaders replied
        in time and names the others in ``missing`` (their leaders are being elected,
        or are on a node that is down): a success that is not the whole list. nats-py
        drops ``missing``; taken as the whole list, it shows a live member's lane as
        gone, and the plan grants its blocks to another member beside it. So the
        request is made here, and a list with any consumer missing is transient.
        """
        subject = f"{self._js._prefix}.CONSUMER.LIST.{stream}"

        async def op() -> list[ConsumerInfo]:
            found: list[ConsumerInfo] = []
            while True:
                request = json.dumps({"offset": len(found)}).encode()
                msg = await self._js._nc.request(subject, request, timeout=self._js._timeout)
                page: dict[str, Any] = json.loads(msg.data)
                if "error" in page:
                    raise nats.js.errors.APIError.from_error(page["error"])
                missing = page.get("missing") or []
                if missing:
                    raise JetStreamUnavailableError(
                        f"list consumers of {stream}: {len(missing)} of them did not answer "
                        f"(no leader yet?): {sorted(missing)[:5]}"
                    )
                found.extend(ConsumerInfo.from_response(c) for c in page.get("consumers") or [])
                if not page.get("consumers") or len(found) >= page.get("total", 0):
                    return found

        return await self._call(f"list consumers of {stream}", op, stream=stream)

    async def consumer_info(self, stream: str, name: str) -> ConsumerInfo | None:
        """The consumer's info, or None if it does not exist."""

        async def op() -> ConsumerInfo:
            info: ConsumerInfo = await self._js.consumer_info(
                stream, name, timeout=self.retry.request_timeout_s
            )
            return info

        try:
            return await self._call(f"consumer info {name}", op, consumer=name)
        except JetStreamApiError as e:
            if e.err_code == CONSUMER_NOT_FOUND:
                return None
            raise

    async def put_consumer(self, stream: str, config: ConsumerConfig) -> ConsumerInfo:
        """Create the durable consumer, or update it when it exists (same durable name).

        Never on a server too old for it: 2.9 reads ``filter_subjects`` as no filter."""
        self.check_server()
        self.mutations += 1

        async def op() -> ConsumerInfo:
            return await self._js.add_consumer(stream, config, timeout=self.retry.request_timeout_s)

        return await self._call(
            f"put consumer {config.durable_name}", op, consumer=config.durable_name
        )

    async def delete_consumer(self, stream: str, name: str) -> None:
        """Delete the consumer; a consumer that is already gone counts as deleted."""
        self.mutations += 1

        async def op() -> None:
            await self._js.delete_consumer(stream, name)

        try:
            await self._call(f"delete consumer {name}", op, consumer=name)
        except JetStreamApiError as e:
            if e.err_code != CONSUMER_NOT_FOUND:
                raise

    async def pause_consumer(self, stream: str, name: str, *, for_s: float) -> None:
        """Pause deliveries for ``for_s`` seconds (so a crashed caller's pause runs out)."""
        self.mutations += 1
        until = rfc3339(datetime.now(UTC) + timedelta(seconds=for_s))

        async def op() -> None:
            await self._js.pause_consumer(stream, name, until, timeout=self.retry.request_timeout_s)

        await self._call(f"pause consumer {name}", op, consumer=name)

    async def resume_consumer(self, stream: str, name: str) -> None:
        self.mutations += 1

        async def op() -> None:
            await self._js.resume_consumer(stream, name, timeout=self.retry.request_timeout_s)

        await self._call(f"resume consumer {name}", op, consumer=name)

    async def reset_consumer(self, stream: str, name: str, *, seq: int) -> None:
        """Rewind the consumer so it redelivers everything its filter matches from ``seq``."""
        self.mutations += 1

        async def op() -> None:
            await self._js.reset_consumer(
                stream, name, seq=seq, timeout=self.retry.request_timeout_s
            )

        await self._call(f"reset consumer {name} to {seq}", op, consumer=name)


def _short(subjects: list[str] | None) -> str:
    subjects = subjects or []
    return str(subjects) if len(subjects) <= 3 else f"{subjects[:2]} and {len(subjects) - 2} more"


def stream_config(
    *,
    name: str,
    subject_prefix: str,
    shards: int,
    replicas: int,
    duplicate_window_s: float,
    blocks: int | None = None,
) -> StreamConfig:
    """The command stream: work-queue retention over the shards' own subjects, file storage.

    The subjects are ``subjects.stream_subjects``: one per shard, so a publish on
    a subject no consumer can own is refused by the server instead of stored. The
    metadata records the shard count (``subjects.STREAM_META_SHARDS``), which
    clients and workers read and check theirs against. ``blocks``: K for a stream
    that stores under blocks: it gets the block transform
    (``subjects.block_transform``) and ``max_consumers`` = ``MAX_CONSUMERS``.
    """
    transform = None
    if blocks is not None:
        src, dest = block_transform(blocks, prefix=subject_prefix)
        transform = SubjectTransform(src=src, dest=dest)
    return StreamConfig(
        name=name,
        subjects=stream_subjects(shards, prefix=subject_prefix),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=duplicate_window_s,
        metadata={STREAM_META_SHARDS: str(shards)},
        subject_transform=transform,
        max_consumers=None if blocks is None else MAX_CONSUMERS,
    )


def stream_layout(
    actual: StreamConfig, *, subject_prefix: str, blocks: int | None
) -> Literal["blocks", "shards"]:
    """The layout an existing stream was made with: ``blocks`` when it has our block
    transform for ``blocks`` blocks, ``shards`` when it has no transform.

    Raises StreamMismatchError for any other transform (another K, or not ours): the
    messages it stored are under subjects no consumer of ours would match.
    """
    transform = actual.subject_transform
    if transform is None or not (transform.src or transform.dest):
        return "shards"
    if blocks is not None:
        src, dest = block_transform(blocks, prefix=subject_prefix)
        if (transform.src, transform.dest) == (src, dest):
            return "blocks"
    name = actual.name or ""
    raise StreamMismatchError(
        f"stream {name} stores under the transform {transform.src} -> {transform.dest}, "
        f"not the block transform of this group (blocks={blocks}); it is left unchanged: "
        "fix or remove it by hand",
        stream=name,
    )


def check_stream(actual: StreamConfig, wanted: StreamConfig) -> None:
    """Raise StreamMismatchError unless ``actual`` can serve as ``wanted``.

    Its subjects are not compared: ``ensure_stream`` rewrites them.
    """
    name = wanted.name or ""
    problems: list[str] = []
    if actual.retention != RetentionPolicy.WORK_QUEUE:
        problems.append(f"retention is {actual.retention}, not workqueue")
    recorded = recorded_shards(actual.metadata)
    wanted_shards = recorded_shards(wanted.metadata)
    if recorded is not None and recorded != wanted_shards:
        problems.append(
            f"its metadata records {recorded} shards ({STREAM_META_SHARDS}), not {wanted_shards}:"
            " the shard count is fixed for a stream's lifetime"
        )
    if problems:
        raise StreamMismatchError(
            f"stream {name} exists but is incompatible ({'; '.join(problems)}); "
            "it is left unchanged: fix or remove it by hand",
            stream=name,
        )


def consumer_config(
    *,
    name: str,
    filter_subjects: list[str],
    ack_wait_s: float,
    max_ack_pending: int,
    max_deliver: int,
    metadata: dict[str, str],
) -> ConsumerConfig:
    """A member's durable pull consumer: explicit ack, deliver all (work-queue rules),
    at most ``max_deliver`` deliveries of one message (then the server's advisory)."""
    return ConsumerConfig(
        durable_name=name,
        name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
        max_deliver=max_deliver,
        filter_subjects=filter_subjects,
        metadata=metadata,
    )
