"""The worker's consumer as the server has it, and the calls that settle its deliveries.

This is the one module of the worker that catches nats-py's errors (``store.py``
is the same boundary for the database). The pull loop in ``consuming.py`` needs
three answers from NATS and gets them here in its own terms:

- ``read_consumer``: our consumer's ``ConsumerInfo``; ``"gone"`` when the server
  says it does not exist, which is the fence; ``"unknown"`` when there was no
  answer (a leader election, a reconnect), which is not.
- ``consumer_names``: the names of the stream's consumers, from which the
  worker picks its own (``coordshard_client.naming.generation_of``).
- ``open_puller``/``close_puller``/``fetch``: the pull subscription; a NATS
  failure is ``NatsUnavailableError``, a refused pull stays ``PullError``.
- ``resend``/``ack``/``ack_sync``/``term``/``term_sync``: settling; any failure is
  ``NatsUnavailableError``, and the caller asks ``read_consumer`` what it means.
- ``stream_instance``: which life of the stream we serve (its name and creation
  time); the store scopes its sequence bookkeeping by it.
- ``rewind``: put our consumer's cursor back to the stream's first message, so
  deliveries a previous process of ours held come again, in stream order.
- ``stored_message``/``delete_message``: one message by stream sequence, for the
  messages a consumer gave up on (``advisories``); None / no error when it is gone.
- ``reply``: the outcome; any failure is ``ReplyError``, which is not a failed
  ack: the caller counts it and settles the message anyway.

Each error says what was being done and chains the nats-py error (``from e``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, RawStreamMsg, StreamInfo

from coordshard_client.subjects import recorded_shards
from coordshard_service.errors import NatsUnavailableError, ReplyError
from coordshard_service.pulling import Puller

__all__ = [
    "ConsumerState",
    "StreamInstance",
    "ack",
    "ack_sync",
    "close_puller",
    "consumer_names",
    "delete_message",
    "fetch",
    "open_puller",
    "read_consumer",
    "reply",
    "resend",
    "rewind",
    "stored_message",
    "stream_instance",
    "term",
    "term_sync",
]

logger = logging.getLogger(__name__)

ConsumerState = ConsumerInfo | Literal["gone", "unknown"]
"""Our consumer; "gone": the server says it does not exist; "unknown": no answer."""


@dataclass(frozen=True, slots=True)
class StreamInstance:
    """One life of a stream: its name and the time the server created it.

    A stream deleted and made again under its name, or lost with a server's
    storage and re-created, is a new instance: its sequences start at 1 again,
    so the marks and sequence-keyed outcomes of the old one mean nothing for
    it. The creation time is the stream's own record (kept across server
    restarts, leader changes and config updates), so no one has to write an id
    into the stream when creating it.
    """

    name: str
    created: datetime
    first_seq: int
    """The stream's first sequence when it was read (where a rewind starts)."""
    shards: int | None = None
    """The shard count the stream's metadata records (``subjects.STREAM_META_SHARDS``);
    None for a stream made before it was recorded."""
    last_seq: int = 0
    """The stream's last sequence when it was read: a lane bound then may get, up to
    here, messages a process that died was applying (``attempts``)."""

    @property
    def key(self) -> str:
        """``<name>@<creation time, UTC, microseconds>``: what the store records."""
        return f"{self.name}@{self.created.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"


_NATS_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
"""What a nats-py request raises when NATS refuses or does not answer."""
STREAM_NOT_FOUND = 10059
"""JetStream's err_code for a request about a stream that does not exist."""
SEQUENCE_NOT_FOUND = 10043
"""JetStream's err_code for a delete of a sequence the stream does not hold."""
_REPLY_ERRORS: tuple[type[Exception], ...] = (*_NATS_ERRORS, ValueError)
"""What publishing a reply raises: NATS's refusals, and ``ValueError`` for a subject
nats-py cannot even encode."""
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error,)
"""What the pull subscription's calls raise when the connection fails; a bare
TimeoutError from them would be a bug of ours, so it is not mapped."""


@contextlib.contextmanager
def _unavailable(what: str, errors: tuple[type[Exception], ...] = _NATS_ERRORS) -> Iterator[None]:
    try:
        yield
    except errors as e:
        raise NatsUnavailableError(f"{what}: {e!r}") from e


async def read_consumer(js: JetStreamContext, *, stream: str, consumer: str) -> ConsumerState:
    """Our consumer as the server has it; no answer is "unknown" (and logged), never gone."""
    try:
        info: ConsumerInfo = await js.consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return "gone"
    except _NATS_ERRORS as e:
        logger.warning("reading consumer %s: %r", consumer, e)
        return "unknown"
    return info


NAMES_API = "$JS.API.CONSUMER.NAMES"
NAMES_TIMEOUT_S = 5.0


async def consumer_names(nc: Client, stream: str) -> list[str]:
    """The names of the stream's consumers (``$JS.API.CONSUMER.NAMES``, page by page).

    NatsUnavailableError when NATS does not answer or refuses; nats-py has no
    call for it (``consumers_info`` lists whole configurations, and needs the
    worker to be allowed to see every consumer's).
    """
    names: list[str] = []
    while True:
        request = json.dumps({"offset": len(names)}).encode()
        with _unavailable(f"listing the consumers of {stream}"):
            msg = await nc.request(f"{NAMES_API}.{stream}", request, timeout=NAMES_TIMEOUT_S)
        try:
            body = json.loads(msg.data)
        except ValueError as e:
            raise NatsUnavailableError(f"listing the consumers of {stream}: {e!r}") from e
        error = body.get("error")
        if error is not None and error.get("err_code") == STREAM_NOT_FOUND:
            return []  # no stream yet: no consumer either (and made later, we hear of it)
        if error is not None:
            raise NatsUnavailableError(f"listing the consumers of {stream}: {error}")
        page = body.get("consumers") or []
        names += page
        if not page or len(names) >= int(body.get("total", 0)):
            return names


async def open_puller(nc: Client, *, stream: str, consumer: str) -> Puller:
    """A started ``Puller`` for our consumer; NatsUnavailableError if it cannot subscribe."""
    puller = Puller(nc, stream=stream, consumer=consumer)
    with _unavailable(f"binding to consumer {consumer}", _CONNECTION_ERRORS):
        await puller.start()
    return puller


async def close_puller(puller: Puller) -> None:
    """Unsubscribe; NatsUnavailableError if NATS did not take it."""
    with _unavailable("unsubscribing", _CONNECTION_ERRORS):
        await puller.stop()


async def fetch(puller: Puller, batch: int, *, timeout: float) -> list[Msg]:
    """One pull (see ``Puller.fetch``).

    Raises:
        PullError: the server refused or cut the request.
        NatsUnavailableError: the connection failed (a reconnect in progress).
    """
    with _unavailable("fetch", _CONNECTION_ERRORS):
        return await puller.fetch(batch, timeout=timeout)


async def reply(nc: Client, subject: str, body: bytes) -> None:
    """Publish an outcome on the caller's reply subject; ReplyError if it did not go out
    (``decode`` refuses the subjects nats-py or the server would refuse: this is the
    second line)."""
    try:
        await nc.publish(subject, body)
    except _REPLY_ERRORS as e:
        raise ReplyError(f"replying on {subject[:100]!r}: {e!r}", subject=subject) from e


async def resend(nc: Client, ack_subject: str, body: bytes, *, timeout: float | None) -> None:
    """Send an ack protocol body again ourselves (nats-py refuses a second ack of a Msg);
    with a ``timeout``, wait that long for the server's confirmation."""
    with _unavailable("acking again"):
        if timeout is None:
            await nc.publish(ack_subject, body)
        else:
            await nc.request(ack_subject, body, timeout=timeout)


async def ack(msg: Msg) -> None:
    with _unavailable("ack"):
        await msg.ack()


async def ack_sync(msg: Msg, *, timeout: float) -> None:
    """Ack and wait up to ``timeout`` seconds for the server's confirmation."""
    with _unavailable("ack_sync"):
        await msg.ack_sync(timeout=timeout)


async def term(msg: Msg) -> None:
    with _unavailable("term"):
        await msg.term()


async def term_sync(nc: Client, msg: Msg, *, timeout: float) -> None:
    """Terminate ``msg`` and wait up to ``timeout`` seconds for the server's confirmation
    (nats-py's ``term`` only publishes; the server answers a term sent as a request)."""
    with _unavailable("term"):
        await nc.request(msg.reply, b"+TERM", timeout=timeout)


async def stream_instance(js: JetStreamContext, stream: str) -> StreamInstance:
    """The stream's current instance; NatsUnavailableError if it cannot be read."""
    with _unavailable(f"reading stream {stream}"):
        info: StreamInfo = await js.stream_info(stream)
    if info.created is None:  # servers older than the 2.14 we require
        raise NatsUnavailableError(f"stream {stream}: the server reports no creation time")
    shards = recorded_shards(info.config.metadata)
    return StreamInstance(
        stream, info.created, info.state.first_seq, shards, last_seq=info.state.last_seq
    )


async def rewind(js: JetStreamContext, *, stream: StreamInstance, consumer: str) -> int:
    """Reset our consumer to the stream's first sequence (as read with ``stream``) and
    return that sequence.

    Everything still in the stream that the consumer's filters match is then
    delivered again, oldest first, and the deliveries pending before the reset
    are forgotten (their acks are ignored). On a WorkQueue stream whatever is
    left on our shards is ours, so nothing of another member comes with it.
    Needs nats-server 2.14+ (consumer reset).
    """
    first = max(1, stream.first_seq)
    with _unavailable(f"rewinding consumer {consumer}"):
        await js.reset_consumer(stream.name, consumer, seq=first)
    return first


async def stored_message(js: JetStreamContext, *, stream: str, seq: int) -> RawStreamMsg | None:
    """The message at ``seq`` as the stream stores it (raw headers and bytes); None if gone."""
    try:
        msg: RawStreamMsg = await js.get_msg(stream, seq=seq)
    except nats.js.errors.NotFoundError:
        return None
    except _NATS_ERRORS as e:
        raise NatsUnavailableError(f"reading message {seq} of {stream}: {e!r}") from e
    return msg


async def delete_message(js: JetStreamContext, *, stream: str, seq: int) -> None:
    """Delete the message at ``seq``; one already gone (err_code 10043) counts as deleted."""
    try:
        await js.delete_msg(stream, seq)
    except nats.js.errors.APIError as e:
        if e.err_code == SEQUENCE_NOT_FOUND:
            return
        raise NatsUnavailableError(f"deleting message {seq} of {stream}: {e!r}") from e
    except _NATS_ERRORS as e:
        raise NatsUnavailableError(f"deleting message {seq} of {stream}: {e!r}") from e
