"""The operator's own errors, beside the rebalancer's (``rebalancer.errors``)::

CoordshardError
├── InvalidSpecError (ValueError)   a CoordinateShards spec a human must fix (``field``)
└── TransientError
    ├── SecretUnavailableError      a Secret of spec.nats (or a key in it) is missing
    └── NatsAuthError               NATS refused the credentials from those Secrets
"""

from __future__ import annotations

from coordshard_operator.rebalancer.errors import CoordshardError, TransientError

__all__ = ["InvalidSpecError", "NatsAuthError", "SecretUnavailableError"]


class InvalidSpecError(CoordshardError, ValueError):
    """The CoordinateShards spec is invalid; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field


class SecretUnavailableError(TransientError):
    """A Secret named in spec.nats, or the key it should hold, cannot be read (yet).

    The message names the Secret and key, never their content.
    """


class NatsAuthError(TransientError):
    """NATS refused the credentials (nkey, .creds, client certificate) of spec.nats.

    Transient because fixing the Secret fixes it: the next reconcile re-reads it.
    """
