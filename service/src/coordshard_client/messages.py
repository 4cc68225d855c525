"""The wire messages: every command, query and outcome, as frozen pydantic models.

This module owns the JSON that travels between the SDK and the workers, and
nothing else: no I/O, no NATS. A command travels as an :class:`Envelope`
(``{"v": 1, "command": {...}}``) whose ``command`` is discriminated by ``op``;
the worker answers with an :class:`Outcome` (``{"v": 1, "ok": ..., ...}``).
The version lets a worker refuse what it does not understand instead of
guessing. The AsyncAPI document is generated from these models.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "COMMAND_OPS",
    "HEADER_KEY",
    "HEADER_REPLY",
    "KEY_PATTERN",
    "MAX_KEY_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "QUERY_OPS",
    "WIRE_VERSION",
    "Bounds",
    "Command",
    "CreatePoint",
    "CreateSystem",
    "DeletePoint",
    "DeleteSystem",
    "Deleted",
    "Envelope",
    "ErrorCode",
    "ErrorInfo",
    "GetPoint",
    "GetSystem",
    "ListPoints",
    "Move",
    "MovePoint",
    "MoveTo",
    "Outcome",
    "Point",
    "PointPage",
    "Result",
    "System",
    "Translate",
    "check_key",
]

WIRE_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Largest command payload a worker accepts; larger ones are dead-lettered."""
HEADER_REPLY: Final = "Coordshard-Reply-To"
"""Header carrying the core NATS subject the worker sends the outcome to."""
HEADER_KEY: Final = "Coordshard-Idempotency-Key"
"""Header carrying the idempotency key (equal to ``Nats-Msg-Id`` on a first attempt)."""
MAX_KEY_LENGTH: Final = 200
"""Most characters in an idempotency key: the store keeps it in a ``varchar(200)``."""
KEY_PATTERN: Final = r"^[^\x00-\x1f\x7f]+$"
"""An idempotency key holds no control character: NUL cannot be stored in a PostgreSQL
text column, and CR or LF would end the header that carries it."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_KEY_RE: Final = re.compile(KEY_PATTERN)

# Every limit below is one the store has (column lengths, no NUL in text, finite
# numbers), checked here so that the SDK cannot build, and the worker does not
# accept, a command the database would refuse; docs/service.md lists them.
Token = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^.*>\s\x00-\x1f\x7f]+$")]
Text = Annotated[str, Field(min_length=1, pattern=r"^[^\x00]+$")]
"""Free text: anything but NUL, which PostgreSQL text cannot hold."""
Coordinate = Annotated[float, Field(allow_inf_nan=False, strict=True)]
"""A finite JSON number; strict, so ``"1"`` and ``true`` are refused as the contract says."""
Coordinates = Annotated[tuple[Coordinate, ...], Field(min_length=2, max_length=3)]


def _not_bool(value: object) -> object:
    """Refuse ``true``/``false`` where an integer constant is expected (``True == 1``)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


def check_key(key: str) -> str:
    """Return ``key`` if it can serve as an idempotency key, else raise ValueError saying why.

    The SDK checks the key it is given before publishing; the worker checks the one
    a message carries and dead-letters the message if it fails.
    """
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"idempotency key is {len(key)} characters long; at most {MAX_KEY_LENGTH} are kept"
        )
    if not _KEY_RE.match(key):
        raise ValueError("idempotency key must be non-empty and hold no control characters")
    return key


class Bounds(BaseModel):
    """An axis-aligned box: ``low[i] <= x[i] <= high[i]`` on every axis."""

    model_config = _FROZEN
    low: Coordinates
    high: Coordinates

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if len(self.low) != len(self.high):
            raise ValueError("bounds low and high must have the same dimension")
        if any(lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("bounds low must not exceed high on any axis")
        return self


class CreateSystem(BaseModel):
    """Create a coordinate system; the id is the shard key."""

    model_config = _FROZEN
    op: Literal["create-system"] = "create-system"
    system_id: Token
    name: Annotated[Text, Field(max_length=200)]
    dimension: Literal[2, 3]
    units: Annotated[Text, Field(max_length=32)] = "m"
    bounds: Bounds | None = None

    @model_validator(mode="after")
    def _bounds_match(self) -> CreateSystem:
        if self.bounds is not None and len(self.bounds.low) != self.dimension:
            raise ValueError("bounds must have the system's dimension")
        return self


class DeleteSystem(BaseModel):
    """Delete a system and all its points."""

    model_config = _FROZEN
    op: Literal["delete-system"] = "delete-system"
    system_id: Token


class CreatePoint(BaseModel):
    """Create a point inside a system (inside its bounds, if it has any)."""

    model_config = _FROZEN
    op: Literal["create-point"] = "create-point"
    system_id: Token
    point_id: Token
    coordinates: Coordinates


class Translate(BaseModel):
    """Move a point by a relative offset."""

    model_config = _FROZEN
    kind: Literal["translate"] = "translate"
    delta: Coordinates


class MoveTo(BaseModel):
    """Move a point to an absolute position."""

    model_config = _FROZEN
    kind: Literal["move-to"] = "move-to"
    position: Coordinates


Move = Annotated[Translate | MoveTo, Field(discriminator="kind")]


class MovePoint(BaseModel):
    """Apply movements in order; if any step leaves the bounds, none is applied."""

    model_config = _FROZEN
    op: Literal["move-point"] = "move-point"
    system_id: Token
    point_id: Token
    moves: Annotated[tuple[Move, ...], Field(min_length=1, max_length=100)]
    expected_version: Annotated[int, Field(ge=1, strict=True)] | None = None
    """If set, refuse with ``conflict`` unless the point is at this version."""


class DeletePoint(BaseModel):
    """Delete one point."""

    model_config = _FROZEN
    op: Literal["delete-point"] = "delete-point"
    system_id: Token
    point_id: Token


class GetSystem(BaseModel):
    """Read a system."""

    model_config = _FROZEN
    op: Literal["get-system"] = "get-system"
    system_id: Token


class GetPoint(BaseModel):
    """Read a point."""

    model_config = _FROZEN
    op: Literal["get-point"] = "get-point"
    system_id: Token
    point_id: Token


class ListPoints(BaseModel):
    """Read a page of a system's points, ordered by point id."""

    model_config = _FROZEN
    op: Literal["list-points"] = "list-points"
    system_id: Token
    after: Token | None = None
    """Return points whose id sorts after this one (the previous page's ``next_after``)."""
    limit: Annotated[int, Field(ge=1, le=1000, strict=True)] = 100


Command = Annotated[
    CreateSystem
    | DeleteSystem
    | CreatePoint
    | MovePoint
    | DeletePoint
    | GetSystem
    | GetPoint
    | ListPoints,
    Field(discriminator="op"),
]

COMMAND_OPS: Final = (
    "create-system",
    "delete-system",
    "create-point",
    "move-point",
    "delete-point",
)
"""Ops that change state: deduplicated, their outcomes stored."""
QUERY_OPS: Final = ("get-system", "get-point", "list-points")
"""Ops that only read: answered from the current state, never stored."""


class Envelope(BaseModel):
    """What a command message's payload is: a version and one command."""

    model_config = _FROZEN
    v: Annotated[Literal[1], BeforeValidator(_not_bool)] = WIRE_VERSION
    command: Command


class System(BaseModel):
    """A coordinate system as the worker holds it."""

    model_config = _FROZEN
    kind: Literal["system"] = "system"
    system_id: Token
    name: str
    dimension: Literal[2, 3]
    units: str
    bounds: Bounds | None = None


class Point(BaseModel):
    """A point; ``version`` starts at 1 and rises by one per accepted change."""

    model_config = _FROZEN
    kind: Literal["point"] = "point"
    system_id: Token
    point_id: Token
    coordinates: tuple[float, ...]
    version: int


class PointPage(BaseModel):
    """One page of ``list-points``."""

    model_config = _FROZEN
    kind: Literal["point-page"] = "point-page"
    system_id: Token
    points: tuple[Point, ...]
    next_after: str | None = None
    """Pass as ``after`` to get the next page; ``None`` on the last page."""


class Deleted(BaseModel):
    """The answer to a delete."""

    model_config = _FROZEN
    kind: Literal["deleted"] = "deleted"
    system_id: Token
    point_id: Token | None = None
    points_deleted: int = 0


Result = Annotated[System | Point | PointPage | Deleted, Field(discriminator="kind")]


class ErrorCode(StrEnum):
    """Why a command was refused; the SDK maps each to an exception class."""

    VALIDATION = "validation"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    OUT_OF_BOUNDS = "out-of-bounds"
    UNAVAILABLE = "unavailable"


class ErrorInfo(BaseModel):
    """A refusal: a code the caller can act on and a message for humans."""

    model_config = _FROZEN
    code: ErrorCode
    message: str


class Outcome(BaseModel):
    """The worker's answer to one command or query: a result or an error."""

    model_config = _FROZEN
    v: Literal[1] = WIRE_VERSION
    ok: bool
    result: Result | None = None
    error: ErrorInfo | None = None
    stream_seq: int | None = None
    """The stream sequence of the message that produced this outcome."""
    replayed: bool = False
    """True when this is a stored outcome sent again for a retried or redelivered command."""

    @model_validator(mode="after")
    def _one_of(self) -> Outcome:
        if self.ok and self.error is not None:
            raise ValueError("an ok outcome carries no error")
        if not self.ok and self.error is None:
            raise ValueError("a failed outcome carries an error")
        return self
