"""Wire models and domain rules, without I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordshard_client.messages import (
    Bounds,
    CreatePoint,
    CreateSystem,
    Envelope,
    ErrorCode,
    ErrorInfo,
    MovePoint,
    MoveTo,
    Outcome,
    Point,
    System,
    Translate,
)
from coordshard_service import domain

BOX = System(
    system_id="s", name="s", dimension=2, units="m", bounds=Bounds(low=(0, 0), high=(10, 10))
)
P = Point(system_id="s", point_id="p", coordinates=(5, 5), version=3)


def test_envelope_round_trips_and_is_frozen() -> None:
    env = Envelope(command=MovePoint(system_id="s", point_id="p", moves=(Translate(delta=(1, 2)),)))
    again = Envelope.model_validate_json(env.model_dump_json())
    assert again == env
    with pytest.raises(ValidationError):
        env.v = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"v": 2, "command": {"op": "get-system", "system_id": "s"}}', id="version"),
        pytest.param(
            '{"v": 1, "command": {"op": "get-system", "system_id": "s", "x": 1}}', id="extra"
        ),
        pytest.param('{"v": 1, "command": {"op": "get-system", "system_id": "a.b"}}', id="token"),
        pytest.param('{"v": 1, "command": {"op": "nope", "system_id": "s"}}', id="op"),
        pytest.param(
            '{"v": 1, "command": {"op": "create-point", "system_id": "s", "point_id": "p",'
            ' "coordinates": [1e999, 0]}}',
            id="infinite",
        ),
    ],
)
def test_envelope_rejects(payload: str) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate_json(payload)


def test_bounds_and_outcome_invariants() -> None:
    with pytest.raises(ValidationError):
        Bounds(low=(1, 0), high=(0, 1))
    with pytest.raises(ValidationError):
        CreateSystem(system_id="s", name="n", dimension=3, bounds=Bounds(low=(0, 0), high=(1, 1)))
    with pytest.raises(ValidationError):
        Outcome(ok=False)


def test_move_is_all_or_nothing() -> None:
    moves = (Translate(delta=(1, 1)), MoveTo(position=(9, 9)), Translate(delta=(2, 0)))
    refused = domain.move_point(BOX, P, MovePoint(system_id="s", point_id="p", moves=moves))
    assert isinstance(refused, ErrorInfo) and refused.code == ErrorCode.OUT_OF_BOUNDS
    assert "move 3 of 3" in refused.message
    ok = domain.move_point(BOX, P, MovePoint(system_id="s", point_id="p", moves=moves[:2]))
    assert isinstance(ok, Point) and ok.coordinates == (9, 9) and ok.version == 4


def test_move_checks_version_and_dimension() -> None:
    stale = MovePoint(
        system_id="s", point_id="p", moves=(MoveTo(position=(1, 1)),), expected_version=2
    )
    assert domain.move_point(BOX, P, stale).code == ErrorCode.CONFLICT  # type: ignore[union-attr]
    flat = MovePoint(system_id="s", point_id="p", moves=(Translate(delta=(1, 1, 1)),))
    assert domain.move_point(BOX, P, flat).code == ErrorCode.VALIDATION  # type: ignore[union-attr]


def test_create_point_rules() -> None:
    cmd = CreatePoint(system_id="s", point_id="q", coordinates=(11, 0))
    assert domain.create_point(None, None, cmd).code == ErrorCode.NOT_FOUND  # type: ignore[union-attr]
    assert domain.create_point(BOX, None, cmd).code == ErrorCode.OUT_OF_BOUNDS  # type: ignore[union-attr]
    assert domain.create_point(BOX, P, cmd).code == ErrorCode.CONFLICT  # type: ignore[union-attr]
    inside = CreatePoint(system_id="s", point_id="q", coordinates=(10, 0))
    assert domain.create_point(BOX, None, inside) == Point(
        system_id="s", point_id="q", coordinates=(10, 0), version=1
    )
