"""The worker's exceptions.

::

    ServiceError
    ├── ConfigError (ValueError)         a setting that cannot work as given: fix it, restart
    │   └── NatsServerTooOldError        nats-server lacks a feature we use: upgrade it
    ├── BadMessageError (ValueError)     the message can never be processed: dead-letter + term
    ├── FencedError                      our consumer is gone or an ack failed: rebind
    ├── StoreRefusedError                the database refused a value (data, constraint):
    │                                    the same batch fails again; isolate the command
    ├── ReplyError                       an outcome could not be sent: counted, settled anyway
    └── TransientError
        ├── NatsUnavailableError         NATS refused or did not answer (consumerstate.py)
        └── StoreUnavailableError        the database did not answer

Domain refusals (unknown system, out of bounds) are not exceptions here: they
are outcomes, answered and acked like any other.
"""

from __future__ import annotations

from coordshard_client.messages import ErrorCode

__all__ = [
    "BadMessageError",
    "ConfigError",
    "FencedError",
    "NatsServerTooOldError",
    "NatsUnavailableError",
    "ReplyError",
    "ServiceError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "TransientError",
]


class ServiceError(Exception):
    """Base of the worker's errors."""


class ConfigError(ServiceError, ValueError):
    """A setting that cannot work as given (e.g. a credentials file that cannot be read)."""


class NatsServerTooOldError(ConfigError):
    """The nats-server we connected to is older than the project needs
    (``coordshard_client.serverversion`` says which feature needs which release)."""


class BadMessageError(ServiceError, ValueError):
    """A message that no retry can fix; carries the reason and the code the caller gets."""

    def __init__(self, reason: str, *, code: ErrorCode = ErrorCode.VALIDATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class FencedError(ServiceError):
    """Our consumer was deleted or no longer takes our acks: stop and re-read the assignment."""

    def __init__(self, message: str, *, consumer: str) -> None:
        super().__init__(message)
        self.consumer = consumer


class StoreRefusedError(ServiceError):
    """The database refused what a transaction wrote or asked for, for a data reason (a
    value it cannot hold, a constraint), not because it is down: retrying the same
    batch fails the same way, so the command that causes it must be found and refused."""


class ReplyError(ServiceError):
    """An outcome that could not be published (nats-py refused the subject, or the publish
    failed). Not a failed ack: the message is settled all the same, or it would come back
    and fail the same way, holding its shard meanwhile."""

    def __init__(self, message: str, *, subject: str) -> None:
        super().__init__(message)
        self.subject = subject


class TransientError(ServiceError):
    """Worth retrying later."""


class NatsUnavailableError(TransientError):
    """NATS did not answer."""


class StoreUnavailableError(TransientError):
    """The database did not answer."""
