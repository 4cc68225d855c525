"""The SDK's exceptions: one class per condition a caller can act on.

::

    CoordinateError
    ├── CoordinateValidationError (ValueError)   the request is malformed; fix it, don't retry
    ├── CoordinateConfigError (ValueError)       the client does not fit the deployment (no such
    │                                            stream, another shard count); fix, don't retry
    ├── CoordinateCredentialsError (ValueError)  a credentials or TLS file is unreadable or
    │                                            wrong, or the server refused them; fix them
    ├── CoordinateNotFoundError (LookupError)    the system or point does not exist
    ├── CoordinateConflictError                  the state forbids it (exists, version mismatch)
    │   └── OutOfBoundsError                     a move would leave the system's bounds
    ├── CoordinateMismatchError                  the answer belongs to another command
    └── CoordinateUnavailableError               transient: retry with the same idempotency key
        └── CoordinateTimeoutError (TimeoutError)  no outcome in time; it may still be applied

Every error raised after a publish carries the ``idempotency_key`` to retry with.
"""

from __future__ import annotations

from coordshard_client.messages import ErrorCode, ErrorInfo

__all__ = [
    "CoordinateConfigError",
    "CoordinateConflictError",
    "CoordinateCredentialsError",
    "CoordinateError",
    "CoordinateMismatchError",
    "CoordinateNotFoundError",
    "CoordinateTimeoutError",
    "CoordinateUnavailableError",
    "CoordinateValidationError",
    "OutOfBoundsError",
    "error_from_outcome",
]


class CoordinateError(Exception):
    """Base of every SDK error."""

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class CoordinateValidationError(CoordinateError, ValueError):
    """The command is invalid (client-side or as judged by the worker); do not retry as is."""


class CoordinateConfigError(CoordinateError, ValueError):
    """The client's settings cannot work with what the server holds: ``stream=`` names
    no stream, or ``shards=`` is not the group's (every command would go to a shard
    no worker owns). Raised by ``start()``; a retry fails the same way."""

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class CoordinateCredentialsError(CoordinateError, ValueError):
    """A credentials or TLS file cannot be read or is not what it should be (the message
    names the setting and the path, never the content), or the server refused the
    credentials or certificate. A retry fails the same way."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        """The setting or keyword at fault; None when the server refused us."""


class CoordinateNotFoundError(CoordinateError, LookupError):
    """The system or point does not exist."""


class CoordinateConflictError(CoordinateError):
    """The current state forbids the command (already exists, version mismatch)."""


class OutOfBoundsError(CoordinateConflictError):
    """A create or move would put a point outside its system's bounds; nothing was applied."""


class CoordinateMismatchError(CoordinateError):
    """The outcome that came back answers another command: its stream sequence is not
    the one the stream stored this command at (a reply from a worker of another
    stream or group, or a store answering from another stream's records).

    The command itself may or may not have been applied. Fix the deployment (each
    group's workers, stream and store must be its own), then retry with the same
    idempotency key: a retry is applied at most once, and answered with its own outcome.
    """

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str | None = None,
        stream_seq: int | None = None,
        expected: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message, idempotency_key=idempotency_key)
        self.stream_seq = stream_seq
        """The sequence the received outcome names."""
        self.expected = expected
        """The sequences the stream stored this command's messages at."""


class CoordinateUnavailableError(CoordinateError):
    """NATS or the workers could not be reached; retrying with the same key is safe."""


class CoordinateTimeoutError(CoordinateUnavailableError, TimeoutError):
    """No outcome arrived in time. The command may still be applied: retry with the same key."""


_BY_CODE: dict[ErrorCode, type[CoordinateError]] = {
    ErrorCode.VALIDATION: CoordinateValidationError,
    ErrorCode.NOT_FOUND: CoordinateNotFoundError,
    ErrorCode.CONFLICT: CoordinateConflictError,
    ErrorCode.OUT_OF_BOUNDS: OutOfBoundsError,
    ErrorCode.UNAVAILABLE: CoordinateUnavailableError,
}


def error_from_outcome(error: ErrorInfo, *, idempotency_key: str) -> CoordinateError:
    """The exception for a refused outcome."""
    return _BY_CODE[error.code](error.message, idempotency_key=idempotency_key)
