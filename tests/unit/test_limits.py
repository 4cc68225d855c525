"""The SDK refuses to build what the store could not hold, or what the contract calls no
number; the domain refuses a result that is not finite. No I/O: the client is never
started, so a refusal here is one made before anything is published."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coordshard_client import CoordinateClient, CoordinateValidationError, Translate
from coordshard_client.messages import (
    MAX_KEY_LENGTH,
    CreatePoint,
    Envelope,
    ErrorCode,
    ErrorInfo,
    ListPoints,
    MovePoint,
    MoveTo,
    Point,
    System,
    check_key,
)
from coordshard_service import domain


def _client() -> CoordinateClient:
    return CoordinateClient(servers=["nats://127.0.0.1:1"])  # never started


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"name": "a\x00b"}, "name", id="nul-in-name"),
        pytest.param({"units": "\x00"}, "units", id="nul-in-units"),
        pytest.param({"name": "n" * 201}, "name", id="long-name"),
        pytest.param({"units": "u" * 33}, "units", id="long-units"),
        pytest.param({"system_id": "s\x00s"}, "system_id", id="nul-in-id"),
        pytest.param({"system_id": "s" * 129}, "system_id", id="long-id"),
    ],
)
async def test_the_sdk_refuses_a_system_the_store_could_not_hold(
    fields: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"system_id": "s", "name": "n", "dimension": 2, **fields}
    with pytest.raises(CoordinateValidationError, match=field):
        await _client().create_system(**args)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * (MAX_KEY_LENGTH + 1), id="201-chars"),
        pytest.param("k\x00k", id="nul"),
        pytest.param("k\r\nk", id="crlf"),
    ],
)
async def test_the_sdk_refuses_an_idempotency_key_the_store_could_not_hold(key: str) -> None:
    with pytest.raises(CoordinateValidationError, match="idempotency_key"):
        await _client().create_system(system_id="s", name="n", dimension=2, idempotency_key=key)


def test_a_key_of_exactly_the_limit_is_taken() -> None:
    key = "ü" * MAX_KEY_LENGTH  # characters, as varchar(200) counts them
    assert check_key(key) == key


@pytest.mark.parametrize(
    "coordinates",
    [
        pytest.param(("1", 0), id="string"),
        pytest.param((True, 0), id="bool"),
        pytest.param((float("inf"), 0), id="infinite"),
    ],
)
async def test_the_sdk_refuses_coordinates_that_are_no_finite_numbers(
    coordinates: tuple[Any, ...],
) -> None:
    with pytest.raises(CoordinateValidationError, match="coordinates"):
        await _client().create_point(system_id="s", point_id="p", coordinates=coordinates)
    with pytest.raises(ValidationError, match="delta"):
        Translate(delta=coordinates)
    with pytest.raises(ValidationError, match="position"):
        MoveTo(position=coordinates)


@pytest.mark.parametrize("limit", ["5", True, 5.0])
async def test_the_sdk_refuses_a_limit_that_is_no_integer(limit: Any) -> None:
    with pytest.raises(CoordinateValidationError, match="limit"):
        await _client().list_points(system_id="s", limit=limit)


def test_integers_where_numbers_are_due_still_pass() -> None:
    point = CreatePoint(system_id="s", point_id="p", coordinates=[1, 2])  # type: ignore[arg-type]
    assert point.coordinates == (1.0, 2.0)
    assert ListPoints(system_id="s", limit=7).limit == 7


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"v": true, "command": {"op": "get-system", "system_id": "s"}}', id="v"),
        pytest.param(
            '{"v": 1, "command": {"op": "move-point", "system_id": "s", "point_id": "p",'
            ' "moves": [{"kind": "translate", "delta": [1, 0]}], "expected_version": true}}',
            id="expected-version",
        ),
        pytest.param(
            '{"v": 1, "command": {"op": "list-points", "system_id": "s", "limit": "5"}}',
            id="limit",
        ),
    ],
)
def test_the_wire_refuses_booleans_and_strings_as_integers(payload: str) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate_json(payload)


def test_a_move_that_overflows_is_refused_as_invalid() -> None:
    system = System(system_id="s", name="s", dimension=2, units="m")
    point = Point(system_id="s", point_id="p", coordinates=(1.7e308, 0), version=1)
    move = MovePoint(system_id="s", point_id="p", moves=(Translate(delta=(1.7e308, 0)),))
    refused = domain.move_point(system, point, move)
    assert isinstance(refused, ErrorInfo) and refused.code == ErrorCode.VALIDATION
    assert "not finite" in refused.message
    # A finite end is no excuse: every step must be finite.
    there_and_back = MovePoint(
        system_id="s",
        point_id="p",
        moves=(Translate(delta=(1.7e308, 0)), MoveTo(position=(0, 0))),
    )
    assert isinstance(domain.move_point(system, point, there_and_back), ErrorInfo)
