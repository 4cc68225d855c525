"""The SDK's public surface is exactly what we mean to support."""

from __future__ import annotations

import coordshard_client

EXPECTED = {
    "DEFAULT_PREFIX",
    "DEFAULT_SHARDS",
    "Bounds",
    "CommandSubject",
    "CoordinateClient",
    "CoordinateConfigError",
    "CoordinateConflictError",
    "CoordinateCredentialsError",
    "CoordinateError",
    "CoordinateMismatchError",
    "CoordinateNotFoundError",
    "CoordinateTimeoutError",
    "CoordinateUnavailableError",
    "CoordinateValidationError",
    "Deleted",
    "InvalidSubjectError",
    "MoveTo",
    "Outcome",
    "OutOfBoundsError",
    "Point",
    "PointPage",
    "System",
    "Translate",
    "command_subject",
    "parse_subject",
    "shard_filter",
    "shard_of",
}


def test_all_is_curated() -> None:
    assert set(coordshard_client.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(coordshard_client, name) is not None


def test_error_tree() -> None:
    from coordshard_client import errors as e

    assert issubclass(e.OutOfBoundsError, e.CoordinateConflictError)
    assert issubclass(e.CoordinateTimeoutError, e.CoordinateUnavailableError)
    assert issubclass(e.CoordinateConfigError, ValueError)
    assert not issubclass(e.CoordinateConfigError, e.CoordinateUnavailableError)
    assert issubclass(e.CoordinateTimeoutError, TimeoutError)
    assert issubclass(e.CoordinateValidationError, ValueError)
    assert issubclass(e.CoordinateNotFoundError, LookupError)
