"""coordshard_client: the wire contract (subjects, messages) and the typed SDK.

Imported by the gateway, the workers and the operator alike; it depends on
neither app package.
"""

from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    CommandSubject,
    InvalidSubjectError,
    command_subject,
    parse_subject,
    shard_filter,
    shard_of,
)

__all__ = [
    "DEFAULT_PREFIX",
    "CommandSubject",
    "InvalidSubjectError",
    "command_subject",
    "parse_subject",
    "shard_filter",
    "shard_of",
]
