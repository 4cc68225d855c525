"""The operator package's errors: one class per condition a caller can act on.

::

    CoordshardError
    ├── ConfigError (ValueError)        bad GroupConfig or desired assignment: fix the input
    ├── StreamMismatchError             existing stream is incompatible: left unchanged
    ├── NatsServerTooOldError           nats-server lacks a feature we use: upgrade it
    ├── StreamMissingError              the stream is gone (call Engine.ensure_stream)
    ├── JetStreamApiError               JetStream refused a request (carries code and err_code)
    └── TransientError                  retry later; ``delay`` suggests when
        ├── NatsUnavailableError        no connection, no responders, request timed out
        └── JetStreamUnavailableError   JetStream disabled or a cluster without a leader (503)

The operator adds its own in ``kube.errors``. nats-py's errors are mapped
onto these at two boundaries: ``rebalancer.jetstream`` (every JetStream
request) and ``kube.runtime`` (connecting to a CR's NATS); nothing else in
the package catches a nats error.

``delay`` is a property of the class (aiokafka's ``retriable`` idea): how
soon a retry may help; a TransientError carries its own.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CoordshardError",
    "JetStreamApiError",
    "JetStreamUnavailableError",
    "NatsServerTooOldError",
    "NatsUnavailableError",
    "StreamMismatchError",
    "StreamMissingError",
    "TransientError",
]


class CoordshardError(Exception):
    """Base of every error the operator package raises on purpose."""

    delay: float = 1.0
    """Seconds before trying again may help."""


class ConfigError(CoordshardError, ValueError):
    """A GroupConfig or a desired assignment is invalid; the message says which rule."""


class StreamMismatchError(CoordshardError):
    """The stream exists but its retention or subjects do not fit; it is left untouched."""

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class NatsServerTooOldError(CoordshardError):
    """The connected nats-server is older than ``serverversion.MIN_SERVER_VERSION``:
    nothing is created on it (an old server silently misreads what we would send)."""

    delay = 30.0
    """An upgrade takes a while: look again every 30 s, not every second."""

    def __init__(self, message: str, *, found: str, needed: str) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed


class StreamMissingError(CoordshardError):
    """The stream does not exist."""

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class JetStreamApiError(CoordshardError):
    """JetStream answered a request with an error that retrying will not fix."""

    def __init__(
        self, message: str, *, code: int | None, err_code: int | None, consumer: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code
        self.consumer = consumer


class TransientError(CoordshardError):
    """The condition may pass by itself: retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class NatsUnavailableError(TransientError):
    """NATS cannot be reached: connection closed, no responders or a request timed out."""


class JetStreamUnavailableError(TransientError):
    """JetStream is disabled or has no leader (a cluster election takes ~5 s)."""
