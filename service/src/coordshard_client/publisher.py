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

Each outcome names the stream sequence of the message that produced it, and
each publish ack the sequence the stream stored ours at (for a duplicate, the
original's): an outcome fresh from a message that is not ours is refused
(``CoordinateMismatchError``), never returned as our result. The two arrive on
one subscription but from different senders (the stream, the worker), so an
outcome may come first; it is then held until the ack says where we were
stored. A replayed outcome answers our idempotency key, and its sequence is
that of whichever publish of the key was first applied, which may be one this
call never saw (a retry after the duplicate window, or on an earlier stream):
it is accepted once an ack has come.

Start-up checks (``start()``): the first connect is bounded by the client's
``timeout`` and fails with ``CoordinateUnavailableError`` (nats-py would retry
it for ever, logging a traceback per attempt); the stream is read once, so a
``stream=`` that names no stream, or a ``shards=`` other than the N the stream
records (``subjects.STREAM_META_SHARDS``), is a ``CoordinateConfigError`` at
start, not a timeout on every call. ``shards=None`` (the default) takes the
stream's N.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from coordshard_client.credentials import NatsFiles, connect_options, refused
from coordshard_client.errors import (
    CoordinateConfigError,
    CoordinateCredentialsError,
    CoordinateError,
    CoordinateMismatchError,
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
    STREAM_META_SHARDS,
    InvalidSubjectError,
    command_subject,
    shards_of_stream,
)
from coordshard_client.tasks import cancel_and_wait

__all__ = ["CoordinateClient"]

EXPECTED_STREAM: Final = "Nats-Expected-Stream"

logger = logging.getLogger(__name__)

_C = TypeVar("_C", bound=BaseModel)
_R = TypeVar("_R", bound=BaseModel)

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a call waits for its outcome by default."""
_PLAIN_ACK: Final = b'{"stream":'
"""How a stream's ack of a fresh publish begins; refusals begin with ``{"error"``."""
_ACK_SEQ: Final = re.compile(rb'"seq":\s*(\d+)')
"""The stream sequence in a publish ack, read without parsing the JSON."""
_STREAM_NOT_FOUND: Final = 10059
"""JetStream's err_code for a stream that does not exist."""


@dataclass(slots=True)
class _Call:
    """One call waiting for its outcome: what is needed to publish it (again)."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    key: str
    future: asyncio.Future[Outcome]
    replayed: bool = field(default=False)
    seqs: list[int] = field(default_factory=list)
    """Where the stream stored this call's messages, from their acks (a duplicate's
    ack names the original's)."""
    unacked: int = 0
    """Publishes whose ack has not come yet."""
    held: Outcome | None = None
    """An outcome that came before the ack it must be checked against."""


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
        shards: int | None = None,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        timeout: float = DEFAULT_TIMEOUT,
        files: NatsFiles | None = None,
    ) -> None:
        if nc is None and not servers:
            raise ValueError("give a connected nats Client or servers=[...]")
        if nc is not None and files is not None:
            raise ValueError("credentials and TLS are for servers=[...]; nc is connected already")
        self._nc = nc
        self._owns = nc is None
        self._servers = list(servers)
        self._options = connect_options(files or NatsFiles())
        """Credentials and TLS keywords for our own connect (read now: a bad path fails here)."""
        self._asked_shards = shards
        self.shards: int = DEFAULT_SHARDS if shards is None else shards
        """The group's N: ``shards=``, or (if None) the stream's, read by ``start()``."""
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
        shards: int | None = None,
        prefix: str = DEFAULT_PREFIX,
        stream: str = DEFAULT_STREAM,
        timeout: float = DEFAULT_TIMEOUT,
        creds: str | None = None,
        nkey_seed: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> CoordinateClient:
        """A client that opens (on ``__aenter__``) and closes its own connection.

        The credentials and TLS files are the worker's ``--nats-creds``,
        ``--nats-nkey-seed``, ``--nats-tls-ca``, ``--nats-tls-cert`` and
        ``--nats-tls-key`` (in Kubernetes, the Secrets the CoordinateShards names,
        mounted). An nkey seed or ``.creds`` file needs the ``nkeys`` package.

        Args:
            servers: NATS URLs.
            shards: the group's shard count; None (default): the one the stream records.
            prefix: the command subject prefix; default ``coordinate.cmd``.
            stream: the command stream; default ``COORDINATE``.
            timeout: seconds a call waits for its outcome, and the first connect and
                the stream check at start may take; default 5.
            creds: path of a ``.creds`` file (user JWT and nkey seed).
            nkey_seed: path of a file holding an nkey user seed.
            tls_ca: path of the PEM CA that signed the servers' certificates; turns TLS on.
            tls_cert: path of a PEM client certificate, for servers that demand one.
            tls_key: path of the PEM key of ``tls_cert`` (both or neither).

        Raises:
            CoordinateCredentialsError: (at once) a file is unreadable or not PEM of its
                kind, or ``tls_cert`` without ``tls_key``; (from ``__aenter__``) the server
                refused the credentials or certificate, or its certificate is not trusted.
            CoordinateUnavailableError: (from ``__aenter__``) no connection within ``timeout``.
            CoordinateConfigError: (from ``__aenter__``) no such stream, or ``shards`` is
                not the stream's.
        """
        files = NatsFiles(
            creds=creds, nkey_seed=nkey_seed, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
        )
        return cls(
            servers=servers,
            shards=shards,
            prefix=prefix,
            stream=stream,
            timeout=timeout,
            files=files,
        )

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
        """Connect (if owning the connection), check the stream, and subscribe to this
        client's reply inbox.

        Raises:
            CoordinateUnavailableError: no connection (or no answer) within ``timeout``.
            CoordinateConfigError: ``stream`` does not exist, or ``shards`` is not the
                shard count the stream records.
        """
        if self._nc is None:
            self._nc = await self._connect()
        try:
            self.shards = await self._read_shards(self._nc)
            self._inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_reply)
        except BaseException:
            if self._owns:
                await self._nc.close()
                self._nc = None
            raise

    async def _connect(self) -> Client:
        """A connection within ``timeout``, or CoordinateUnavailableError; at once
        CoordinateCredentialsError when the server refuses our credentials or
        certificate (or we refuse its certificate), which no retry fixes.

        nats-py retries a first connect for ever when reconnects are unbounded, and
        its default error callback logs a traceback per attempt; ours keeps the last
        error to name it, and only once connected logs (one line, no traceback) the
        losses it then rides out by reconnecting."""
        nc = Client()
        last: list[BaseException] = []
        refusal: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        where = ", ".join(self._servers)

        async def on_error(e: Exception) -> None:
            last[:] = [e]
            if nc.is_connected or nc.is_reconnecting:
                logger.warning("NATS %s: %s", where, e)
            else:
                logger.debug("NATS %s: %s", where, e)
                if refused(e) and not refusal.done():
                    refusal.set_result(e)

        async def on_disconnected() -> None:
            if not nc.is_closed:
                logger.warning("NATS %s: disconnected, reconnecting", where)

        connecting = asyncio.ensure_future(
            nc.connect(
                servers=self._servers,
                connect_timeout=max(1, int(self.timeout)),  # one attempt; wait() bounds all
                max_reconnect_attempts=-1,
                ping_interval=10,
                flush_timeout=self.timeout,  # bounds a publish into a full buffer
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                **self._options,
            )
        )
        try:
            either: set[asyncio.Future[Any]] = {connecting, refusal}
            await asyncio.wait(either, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
            if refusal.done():
                e = refusal.result()
                raise CoordinateCredentialsError(
                    f"connecting to NATS at {where}: refused ({type(e).__name__}: {e}); "
                    "check creds=, nkey_seed=, tls_ca=, tls_cert= and tls_key="
                ) from e
            if not connecting.done():
                raise TimeoutError
            connecting.result()
        except (TimeoutError, OSError, nats.errors.Error, CoordinateCredentialsError) as e:
            await cancel_and_wait(connecting)
            with contextlib.suppress(BaseException):
                await nc.close()
            if isinstance(e, CoordinateCredentialsError):
                raise
            cause = last[0] if last else e
            raise CoordinateUnavailableError(
                f"connecting to NATS at {where}: no connection within {self.timeout}s "
                f"({type(cause).__name__}: {cause})"
            ) from e
        return nc

    async def _read_shards(self, nc: Client) -> int:
        """The group's N: check ``shards=`` against the stream's, or take the stream's."""
        try:
            info = await nc.jetstream(timeout=self.timeout).stream_info(self.stream)
        except nats.js.errors.NotFoundError as e:
            if e.err_code != _STREAM_NOT_FOUND:
                raise CoordinateUnavailableError(f"reading stream {self.stream}: {e}") from e
            raise CoordinateConfigError(
                f"stream {self.stream!r} does not exist: check stream= (the group's "
                "CoordinateShards spec.stream), and that its operator has created it",
                stream=self.stream,
            ) from e
        except (TimeoutError, nats.errors.Error) as e:
            raise CoordinateUnavailableError(
                f"reading stream {self.stream}: {type(e).__name__}: {e} (may this client "
                f"request $JS.API.STREAM.INFO.{self.stream}? see permissions.gateway_permissions)"
            ) from e
        found = shards_of_stream(info.config.metadata, info.config.subjects, prefix=self.prefix)
        asked = self._asked_shards
        if found is None:
            if asked is None:
                raise CoordinateConfigError(
                    f"stream {self.stream} states no shard count (no {STREAM_META_SHARDS} "
                    f"in its metadata, and its subjects are not {self.prefix}'s per shard): "
                    "pass shards=",
                    stream=self.stream,
                )
            return asked
        if asked is not None and asked != found:
            raise CoordinateConfigError(
                f"shards={asked}, but stream {self.stream} holds a group of {found} shards: "
                f"commands would go to shards no worker owns. Pass shards={found}, or leave "
                "it out to take the stream's",
                stream=self.stream,
            )
        return found

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
        if call is None or call.future.done() or call.held is not None:
            return
        try:
            outcome = Outcome.model_validate_json(msg.data)
        except ValidationError as e:
            call.future.set_exception(CoordinateError(f"malformed outcome from worker: {e}"))
            return
        _judge(call, outcome, final=False)

    async def _on_ack(self, token: str, msg: Msg) -> None:
        """A refusal fails the call; a duplicate gets a replay published behind the original."""
        call = self._calls.get(token)
        if call is None or call.future.done():
            return  # answered already, or given up
        call.unacked -= 1
        try:
            seq, duplicate = _read_ack(msg, subject=call.subject, stream=self.stream, key=call.key)
            if seq is not None:
                call.seqs.append(seq)
            if duplicate and not call.replayed:
                # Seen before: ask for the stored outcome behind the original. (The
                # replay's own ack is never a duplicate: its Nats-Msg-Id is fresh.)
                call.replayed = True
                call.headers["Nats-Msg-Id"] = f"{call.key}~replay~{uuid.uuid4().hex}"
                await self._publish(token, call)
            elif call.held is not None:
                _judge(call, call.held, final=False)
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
        timer = loop.call_at(loop.time() + wait, _expire, call)
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
        call.unacked += 1
        try:
            await self._nc.publish(
                call.subject, call.payload, reply=f"{self._inbox}.a{token}", headers=call.headers
            )
        except nats.errors.Error as e:
            raise CoordinateUnavailableError(
                f"publishing to {call.subject}: {e!r}", idempotency_key=call.key
            ) from e


def _expire(call: _Call) -> None:
    """Time is up: an outcome still waiting for its ack is judged without it."""
    if call.future.done():
        return
    if call.held is not None:
        _judge(call, call.held, final=True)
    else:
        call.future.set_exception(TimeoutError())


def _judge(call: _Call, outcome: Outcome, *, final: bool) -> None:
    """Settle ``call`` with ``outcome`` if it answers this command, hold it while an ack
    that could say so is still to come, else fail the call (see the module docstring).

    ``final``: no more acks will be waited for; with none at all, the outcome is
    taken unchecked (there is nothing to check it against).
    """
    seq = outcome.stream_seq
    if (
        seq is None
        or seq in call.seqs
        or (outcome.replayed and call.seqs)
        or (final and not call.seqs)
    ):
        call.held = None
        call.future.set_result(outcome)
        return
    if call.unacked > 0 and not final:
        call.held = outcome
        return
    call.held = None
    stored = ", ".join(map(str, call.seqs))
    call.future.set_exception(
        CoordinateMismatchError(
            f"the outcome received for {call.subject} was produced by stream sequence {seq}, "
            f"but the stream stored this command at {stored}: a reply from a worker of "
            "another stream or group? Check that the workers' stream, prefix and shards "
            "are the client's, then retry with the same idempotency key",
            idempotency_key=call.key,
            stream_seq=seq,
            expected=tuple(call.seqs),
        )
    )


def _read_ack(msg: Msg, *, subject: str, stream: str, key: str) -> tuple[int | None, bool]:
    """Read a stream's publish ack: the sequence it stored the message at (for a
    duplicate, the original's) and whether it was a duplicate; raise if it was refused."""
    if msg.data.startswith(_PLAIN_ACK) and b'"duplicate"' not in msg.data and not msg.headers:
        found = _ACK_SEQ.search(msg.data)  # the common case, read without parsing
        return (int(found.group(1)) if found else None), False
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
    seq = ack.get("seq")
    return (seq if isinstance(seq, int) else None), bool(ack.get("duplicate"))


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
