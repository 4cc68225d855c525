"""The operator's exceptions, one class per condition a caller can act on.

::

    CoordshardError
    ├── InvalidSpecError (ValueError)   the CR cannot be acted on until a human edits it
    └── TransientError                  retry later; nothing is wrong with the CR
        └── NatsUnavailableError        NATS did not answer while applying a plan

``handlers.py`` maps them once, at the kopf edge: InvalidSpecError becomes a
``kopf.PermanentError``, TransientError a ``kopf.TemporaryError``.
"""

from __future__ import annotations

__all__ = ["CoordshardError", "InvalidSpecError", "NatsUnavailableError", "TransientError"]


class CoordshardError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpecError(CoordshardError, ValueError):
    """The CoordinateShards spec is invalid; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field


class TransientError(CoordshardError):
    """Something outside the CR failed; retrying later may succeed."""

    delay: float = 1.0


class NatsUnavailableError(TransientError):
    """NATS (or its JetStream API) did not answer."""
