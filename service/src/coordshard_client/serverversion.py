"""Which nats-server the project needs, and why: the one table of server features.

Every part that talks to JetStream checks the version the server announced in
its ``INFO`` at connect before it does anything else: the operator (and local
mode's engine) before it creates a stream or a consumer, the worker before it
waits for its consumer. An older server does not fail cleanly on what it lacks:
nats-server 2.9 takes a consumer with ``filter_subjects`` (2.10) as one with *no*
filter, so the engine made an unfiltered consumer, the next one was refused
with "multiple non-filtered consumers not allowed", and the group looped on
that error while the worker owned no shard. So the check refuses at start, with
the version found, the version needed and the feature that needs it.

Pure: it reads a version string (nats-py's ``Client.connected_server_version``
gives it); the callers map a refusal onto their own error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "FEATURES",
    "MIN_SERVER_VERSION",
    "Announced",
    "Feature",
    "announced_version",
    "server_version_problem",
]


@dataclass(frozen=True, slots=True)
class Feature:
    """A server feature the project uses, and the first nats-server release that has it."""

    name: str
    since: tuple[int, int, int]
    used_by: str


FEATURES: Final = (
    Feature(
        "consumers with several filter subjects (filter_subjects)",
        (2, 10, 0),
        "one consumer per member owning its shards",
    ),
    Feature("stream and consumer metadata", (2, 10, 0), "the group's shard count, member ids"),
    Feature("consumer pause (CONSUMER.PAUSE)", (2, 11, 0), "the hand-off drains a consumer"),
    Feature(
        "consumer reset (CONSUMER.RESET)",
        (2, 14, 0),
        "the hand-off rewinds a grown consumer; a restarted worker rewinds its own",
    ),
)
"""What the project needs of the server, oldest first."""

MIN_SERVER_VERSION: Final = max(f.since for f in FEATURES)
"""The oldest nats-server every part works with: the newest feature's release."""

_VERSION: Final = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


class Announced(Protocol):
    """What nats-py's ``Client.connected_server_version`` gives (a ``ServerVersion``)."""

    @property
    def major(self) -> int: ...
    @property
    def minor(self) -> int: ...
    @property
    def patch(self) -> int: ...


def announced_version(version: Announced) -> str:
    """``major.minor.patch`` of the server's announced version; ``repr`` of it if nats-py
    cannot read it (then ``server_version_problem`` calls it unreadable)."""
    try:
        return f"{version.major}.{version.minor}.{version.patch}"
    except ValueError:
        return repr(version)


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def server_version_problem(found: str) -> str | None:
    """Why a server that announced ``found`` cannot serve the project, or None if it can.

    An unreadable version is a problem too: nothing can be promised of it.
    """
    match = _VERSION.match(found.strip())
    if match is None:
        return (
            f"nats-server announced an unreadable version {found!r}; "
            f"coordshard needs {_dotted(MIN_SERVER_VERSION)} or later"
        )
    have = (int(match[1]), int(match[2]), int(match[3]))
    missing = [f for f in FEATURES if have < f.since]
    if not missing:
        return None
    lacking = "; ".join(f"{f.name} needs {_dotted(f.since)} ({f.used_by})" for f in missing)
    return (
        f"nats-server {found} is too old: coordshard needs {_dotted(MIN_SERVER_VERSION)} "
        f"or later. Missing: {lacking}. Upgrade the server"
    )
