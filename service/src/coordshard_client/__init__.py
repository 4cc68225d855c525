"""coordshard_client: the wire contract (subjects, messages) and the typed SDK.

Imported by the gateway, the workers and the operator alike; it depends on
neither app package. ``__all__`` is the public surface (a test guards it);
the wire models live in ``coordshard_client.messages``.
"""

from coordshard_client.errors import (
    CoordinateConfigError,
    CoordinateConflictError,
    CoordinateCredentialsError,
    CoordinateError,
    CoordinateMismatchError,
    CoordinateNotFoundError,
    CoordinateTimeoutError,
    CoordinateUnavailableError,
    CoordinateValidationError,
    OutOfBoundsError,
)
from coordshard_client.messages import (
    Bounds,
    Deleted,
    MoveTo,
    Outcome,
    Point,
    PointPage,
    System,
    Translate,
)
from coordshard_client.publisher import CoordinateClient
from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    CommandSubject,
    InvalidSubjectError,
    command_subject,
    parse_subject,
    shard_filter,
    shard_of,
)

__all__ = [
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
    "OutOfBoundsError",
    "Outcome",
    "Point",
    "PointPage",
    "System",
    "Translate",
    "command_subject",
    "parse_subject",
    "shard_filter",
    "shard_of",
]
