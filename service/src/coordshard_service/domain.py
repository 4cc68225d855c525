"""The rules of coordinate systems and points, as pure functions.

No I/O: each function takes the current values and a command and returns the
new value or a refusal (an ``ErrorInfo``). ``commands.py`` loads and stores;
this module decides. That split keeps the rules testable without a database
and makes "a move leaving the bounds is rejected as a whole" one visible loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coordshard_client.messages import (
    Bounds,
    CreatePoint,
    CreateSystem,
    ErrorCode,
    ErrorInfo,
    MovePoint,
    MoveTo,
    Point,
    System,
)

__all__ = ["create_point", "create_system", "inside", "move_point", "refusal"]


def refusal(code: ErrorCode, message: str) -> ErrorInfo:
    """A domain refusal: answered to the caller, never retried."""
    return ErrorInfo(code=code, message=message)


def inside(bounds: Bounds | None, coordinates: Sequence[float]) -> bool:
    """Whether ``coordinates`` lie within ``bounds`` (inclusive); no bounds means yes."""
    if bounds is None:
        return True
    return all(
        lo <= x <= hi for lo, x, hi in zip(bounds.low, coordinates, bounds.high, strict=True)
    )


def create_system(existing: System | None, command: CreateSystem) -> System | ErrorInfo:
    if existing is not None:
        return refusal(ErrorCode.CONFLICT, f"system {command.system_id!r} already exists")
    return System(
        system_id=command.system_id,
        name=command.name,
        dimension=command.dimension,
        units=command.units,
        bounds=command.bounds,
    )


def _check_dimension(system: System, coordinates: Sequence[float], what: str) -> ErrorInfo | None:
    if len(coordinates) != system.dimension:
        return refusal(
            ErrorCode.VALIDATION,
            f"{what} has {len(coordinates)} coordinates; system "
            f"{system.system_id!r} has dimension {system.dimension}",
        )
    return None


def create_point(
    system: System | None, existing: Point | None, command: CreatePoint
) -> Point | ErrorInfo:
    if system is None:
        return refusal(ErrorCode.NOT_FOUND, f"system {command.system_id!r} does not exist")
    if existing is not None:
        return refusal(ErrorCode.CONFLICT, f"point {command.point_id!r} already exists")
    wrong = _check_dimension(system, command.coordinates, "point")
    if wrong is not None:
        return wrong
    if not inside(system.bounds, command.coordinates):
        return refusal(
            ErrorCode.OUT_OF_BOUNDS,
            f"point {command.point_id!r} at {list(command.coordinates)} is outside the bounds",
        )
    return Point(
        system_id=command.system_id,
        point_id=command.point_id,
        coordinates=command.coordinates,
        version=1,
    )


def move_point(system: System | None, point: Point | None, command: MovePoint) -> Point | ErrorInfo:
    """Apply every move in order; refuse the whole command if any step leaves the bounds
    or overflows to a position that is not finite."""
    if system is None:
        return refusal(ErrorCode.NOT_FOUND, f"system {command.system_id!r} does not exist")
    if point is None:
        return refusal(ErrorCode.NOT_FOUND, f"point {command.point_id!r} does not exist")
    if command.expected_version is not None and command.expected_version != point.version:
        return refusal(
            ErrorCode.CONFLICT,
            f"point {command.point_id!r} is at version {point.version}, "
            f"not {command.expected_version}",
        )
    position = point.coordinates
    for step, move in enumerate(command.moves, start=1):
        vector = move.position if isinstance(move, MoveTo) else move.delta
        wrong = _check_dimension(system, vector, f"move {step}")
        if wrong is not None:
            return wrong
        if isinstance(move, MoveTo):
            position = move.position
        else:
            position = tuple(x + d for x, d in zip(position, move.delta, strict=True))
        if not all(math.isfinite(x) for x in position):
            # Finite inputs can add up to an overflow; stored, it would read back as a
            # JSON Infinity that no outcome can carry.
            return refusal(
                ErrorCode.VALIDATION,
                f"move {step} of {len(command.moves)} takes point {command.point_id!r} "
                f"to {list(position)}, which is not finite; nothing was applied",
            )
        if not inside(system.bounds, position):
            return refusal(
                ErrorCode.OUT_OF_BOUNDS,
                f"move {step} of {len(command.moves)} takes point {command.point_id!r} "
                f"to {list(position)}, outside the bounds; nothing was applied",
            )
    return point.model_copy(update={"coordinates": position, "version": point.version + 1})
