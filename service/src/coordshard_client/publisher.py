"""``CoordinateClient``: the typed SDK a gateway uses to command the workers.

Each call builds a command model, publishes it to JetStream on the system's
shard subject with ``Nats-Msg-Id`` set to the idempotency key, and waits for
the worker's outcome on a core-NATS reply subject carried in a header (a
JetStream message has no reply of its own). One wildcard subscription per
client receives every outcome and every publish ack; a call's task waits for
its outcome alone, and the ack is read in the subscription's callback (it
matters only when it reports a refusal or a duplicate), so a call wakes once.

Retries: the stream drops a second publish with the same ``Nats-Msg-Id``
inside its duplicate window, so the worker would never see it and never
answer. When the publish ack says ``duplicate``, the client publishes a
*replay* (a fresh ``Nats-Msg-Id``, the same idempotency-key header): it lands
behind the original on the same shard, and the worker answers it with the
stored outcome, so a retry never applies twice and always gets an answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from coordshard_client.errors import (
    CoordinateError,
    CoordinateTimeoutError,
    CoordinateUnavailableError,
    CoordinateValidationError,
    error_from_outcome,
)
from coordshard_client.messages import (
    HEADER_KEY,
    HEADER_REPLY,
    Bounds,
    Command,
    CreatePoint,
    CreateSystem,
    Deleted,
    DeletePoint,
    DeleteSystem,
    Envelope,
    GetPoint,
    GetSystem,
    ListPoints,
    Move,
    MovePoint,
    Outcome,
    Point,
    PointPage,
    System,
    check_key,
)
from coordshard_client.naming import DEFAULT_STREAM
from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    InvalidSubjectError,
    command_subject,
)

__all__ = ["CoordinateClient"]

EXPECTED_STREAM: Final = "Nats-Expected-Stream"

_C = TypeVar("_C", bound=BaseModel)
_R = TypeVar("_R", bound=BaseModel)

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a call waits for its outcome by default."""
_PLAIN_ACK: Final = b'{"stream":'
"""How a stream's ack of a fresh publish begins; refusals begin with ``{"error"``."""


@dataclass(slots=True)
class _Call:
    """One call waiting for its outcome: what is needed to publish it (again)."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    key: str
    future: asyncio.Future[Outcome]
    replayed: bool = field(default=False)


class CoordinateClient:
    """Typed commands and queries over NATS JetStream.

    Use ``async with CoordinateClient.connect(servers=[...]) as client:`` to let
    it own a connection, or ``async with CoordinateClient(nc):`` over yours.
    """

    def __init__(
        self,
        nc: Client | None = None,
        *,
        servers: Sequence[str] = (),
        shards: int = DEFAULT_SHARDS,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if nc is None and not servers:
            raise ValueError("give a connected nats Client or servers=[...]")
        self._nc = nc
        self._owns = nc is None
        self._servers = list(servers)
        self.shards = shards
        self.prefix = prefix
        self.stream = stream
        self.timeout = timeout
        self._inbox = ""
        self._counter = itertools.count()
        self._calls: dict[str, _Call] = {}
        self._sub: Any = None
        self._keys = f"{uuid.uuid4().hex[:16]}-"
        """Prefix of this client's generated idempotency keys (64 random bits + a counter)."""

    @classmethod
    def connect(
        cls,
        *,
        servers: Sequence[str],
        shards: int = DEFAULT_SHARDS,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CoordinateClient:
        """A client that opens (on ``__aenter__``) and closes its own connection."""
        return cls(servers=servers, shards=shards, prefix=prefix, stream=stream, timeout=timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect (if owning the connection) and subscribe to this client's reply inbox."""
        if self._nc is None:
            try:
                self._nc = await nats.connect(
                    servers=self._servers,
                    max_reconnect_attempts=-1,
                    ping_interval=10,
                    flush_timeout=self.timeout,  # bounds a publish into a full buffer
                )
            except (OSError, nats.errors.Error) as e:
                raise CoordinateUnavailableError(f"connecting to NATS: {e}") from e
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_reply)

    async def close(self) -> None:
        """Stop listening for outcomes; close the connection if this client opened it."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for call in self._calls.values():
            call.future.cancel()
        self._calls.clear()
        if self._owns and self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        if token.startswith("a"):  # the stream's ack of a publish
            await self._on_ack(token[1:], msg)
            return
        call = self._calls.get(token)
        if call is None or call.future.done():
            return
        try:
            call.future.set_result(Outcome.model_validate_json(msg.data))
        except ValidationError as e:
            call.future.set_exception(CoordinateError(f"malformed outcome from worker: {e}"))

    async def _on_ack(self, token: str, msg: Msg) -> None:
        """A refusal fails the call; a duplicate gets a replay published behind the original."""
        call = self._calls.get(token)
        if call is None or call.future.done():
            return  # answered already, or given up
        try:
            if not _duplicate(msg, subject=call.subject, stream=self.stream, key=call.key):
                return
            if call.replayed:
                return  # the replay's own ack: a fresh Nats-Msg-Id is never a duplicate
            # Seen before: ask for the stored outcome behind the original.
            call.replayed = True
            call.headers["Nats-Msg-Id"] = f"{call.key}~replay~{uuid.uuid4().hex}"
            await self._publish(token, call)
        except CoordinateError as e:
            if not call.future.done():
                call.future.set_exception(e)

    # -- commands ---------------------------------------------------------

    async def create_system(
        self,
        *,
        system_id: str,
        name: str,
        dimension: int,
        units: str = "m",
        bounds: Bounds | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> System:
        """Create a coordinate system.

        Raises:
            CoordinateValidationError: bad id, dimension or bounds.
            CoordinateConflictError: a system with this id exists.
            CoordinateTimeoutError: no outcome in time (retry with the same key).
        """
        command = _build(
            CreateSystem,
            system_id=system_id,
            name=name,
            dimension=dimension,
            units=units,
            bounds=bounds,
        )
        return _expect(
            await self.send(command, idempotency_key=idempotency_key, timeout=timeout), System
        )

    async def delete_system(
        self, *, system_id: str, idempotency_key: str | None = None, timeout: float | None = None
    ) -> Deleted:
        """Delete a system and its points. Raises CoordinateNotFoundError if absent."""
        command = _build(DeleteSystem, system_id=system_id)
        return _expect(
            await self.send(command, idempotency_key=idempotency_key, timeout=timeout), Deleted
        )

    async def create_point(
        self,
        *,
        system_id: str,
        point_id: str,
        coordinates: Sequence[float],
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Point:
        """Create a point at version 1.

        Raises:
            CoordinateNotFoundError: no such system.
            CoordinateConflictError: the point exists.
            OutOfBoundsError: outside the system's bounds.
        """
        command = _build(
            CreatePoint, system_id=system_id, point_id=point_id, coordinates=tuple(coordinates)
        )
        return _expect(
            await self.send(command, idempotency_key=idempotency_key, timeout=timeout), Point
        )

    async def move_point(
        self,
        *,
        system_id: str,
        point_id: str,
        moves: Sequence[Move],
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Point:
        """Apply ``moves`` (Translate / MoveTo) in order, all or nothing.

        Raises:
            CoordinateNotFoundError: no such system or point.
            OutOfBoundsError: some step leaves the bounds; nothing was applied.
            CoordinateConflictError: ``expected_version`` does not match.
        """
        command = _build(
            MovePoint,
            system_id=system_id,
            point_id=point_id,
            moves=tuple(moves),
            expected_version=expected_version,
        )
        return _expect(
            await self.send(command, idempotency_key=idempotency_key, timeout=timeout), Point
        )

    async def delete_point(
        self,
        *,
        system_id: str,
        point_id: str,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Deleted:
        """Delete a point. Raises CoordinateNotFoundError if absent."""
        command = _build(DeletePoint, system_id=system_id, point_id=point_id)
        return _expect(
            await self.send(command, idempotency_key=idempotency_key, timeout=timeout), Deleted
        )

    # -- queries ----------------------------------------------------------

    async def get_system(self, *, system_id: str, timeout: float | None = None) -> System:
        """Read a system. Raises CoordinateNotFoundError if absent."""
        command = _build(GetSystem, system_id=system_id)
        return _expect(await self.send(command, timeout=timeout), System)

    async def get_point(
        self, *, system_id: str, point_id: str, timeout: float | None = None
    ) -> Point:
        """Read a point. Raises CoordinateNotFoundError if absent."""
        command = _build(GetPoint, system_id=system_id, point_id=point_id)
        return _expect(await self.send(command, timeout=timeout), Point)

    async def list_points(
        self,
        *,
        system_id: str,
        after: str | None = None,
        limit: int = 100,
        timeout: float | None = None,
    ) -> PointPage:
        """One page of a system's points in id order; follow ``next_after`` for more."""
        command = _build(ListPoints, system_id=system_id, after=after, limit=limit)
        return _expect(await self.send(command, timeout=timeout), PointPage)

    # -- the one way out --------------------------------------------------

    async def send(
        self,
        command: Command,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Publish one command and return its outcome, raising the typed error if refused.

        Args:
            command: any command or query model.
            idempotency_key: the ``Nats-Msg-Id``; a retry with the same key is
                applied at most once and answered with the first outcome. At most
                ``MAX_KEY_LENGTH`` (200) characters, no control characters.
            timeout: seconds to wait for the outcome (default: the client's).

        Raises:
            CoordinateValidationError: the key (or the command's subject) is invalid;
                nothing was published.
            CoordinateError: a subclass naming the refusal, timeout or outage.
        """
        key = idempotency_key or f"{self._keys}{next(self._counter)}"
        try:
            check_key(key)
        except ValueError as e:
            raise CoordinateValidationError(f"idempotency_key: {e}") from e
        if self._nc is None or self._sub is None:
            raise CoordinateUnavailableError("client not started: use 'async with'")
        wait = self.timeout if timeout is None else timeout
        try:
            subject = command_subject(
                system_id=command.system_id, op=command.op, shards=self.shards, prefix=self.prefix
            )
        except InvalidSubjectError as e:
            raise CoordinateValidationError(str(e), idempotency_key=key) from e
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        call = _Call(
            subject=str(subject),
            payload=Envelope(command=command).model_dump_json(exclude_none=True).encode(),
            headers={
                "Nats-Msg-Id": key,
                HEADER_KEY: key,
                HEADER_REPLY: f"{self._inbox}.{token}",
                EXPECTED_STREAM: self.stream,
            },
            key=key,
            future=loop.create_future(),
        )
        self._calls[token] = call
        # One timer per call on the loop's own heap (asyncio.timeout costs a
        # context, a task lookup and a reschedule on top); it fails the future.
        timer = loop.call_at(loop.time() + wait, _expire, call.future)
        try:
            await self._publish(token, call)
            outcome = await call.future
        except TimeoutError as e:
            raise CoordinateTimeoutError(
                f"no outcome for {command.op} {command.system_id} within {wait}s; "
                "retry with the same idempotency key",
                idempotency_key=key,
            ) from e
        finally:
            timer.cancel()
            self._calls.pop(token, None)
        if not outcome.ok:
            assert outcome.error is not None
            raise error_from_outcome(outcome.error, idempotency_key=key)
        return outcome

    async def _publish(self, token: str, call: _Call) -> None:
        """Publish a call's command to the stream, its ack to come to ``<inbox>.a<token>``.

        The ack is read by ``_on_ack``; a publish into a full outgoing buffer is
        bounded by the connection's ``flush_timeout`` (set for owned connections).
        """
        assert self._nc is not None
        try:
            await self._nc.publish(
                call.subject, call.payload, reply=f"{self._inbox}.a{token}", headers=call.headers
            )
        except nats.errors.Error as e:
            raise CoordinateUnavailableError(
                f"publishing to {call.subject}: {e!r}", idempotency_key=call.key
            ) from e


def _expire(future: asyncio.Future[Outcome]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _duplicate(msg: Msg, *, subject: str, stream: str, key: str) -> bool:
    """Read a stream's publish ack: whether it was a duplicate; raise if it was refused."""
    if msg.data.startswith(_PLAIN_ACK) and b'"duplicate"' not in msg.data and not msg.headers:
        return False  # the common case, read without parsing
    if msg.headers and msg.headers.get("Status") == "503":
        raise CoordinateUnavailableError(
            f"no stream answered a publish to {subject} (is stream {stream} there, "
            "and is this client's shard count the stream's?)",
            idempotency_key=key,
        )
    try:
        ack = json.loads(msg.data)
    except ValueError as e:
        raise CoordinateUnavailableError(
            f"unreadable publish ack for {subject}: {msg.data[:200]!r}", idempotency_key=key
        ) from e
    if "error" in ack:
        error = ack["error"]
        raise CoordinateUnavailableError(
            f"stream refused a publish to {subject}: {error.get('description', error)}",
            idempotency_key=key,
        )
    return bool(ack.get("duplicate"))


def _build(model: type[_C], **fields: Any) -> _C:
    """Construct a command model, turning pydantic's error into the SDK's."""
    try:
        return model(**fields)
    except ValidationError as e:
        raise CoordinateValidationError(f"invalid {model.__name__}: {e}") from e


def _expect(outcome: Outcome, kind: type[_R]) -> _R:
    if not isinstance(outcome.result, kind):
        raise CoordinateError(
            f"worker answered with {type(outcome.result).__name__}, expected {kind.__name__}"
        )
    return outcome.result
