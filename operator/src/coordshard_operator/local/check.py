"""The independent check: compare the store's final state with what the ledger implies.

It reads every system's points back through the SDK (so through the workers
that own them now) and compares each with the ledger's expectation. The
workers' own counters play no part: a move applied twice shows up as a version
above the expected one (``duplicate_effects``), a move or a point that was
acknowledged but is gone shows up as a version below it or a missing point
(``lost``). Points whose last command ended unknown are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordshard_client.messages import Point
from coordshard_client.publisher import CoordinateClient
from coordshard_operator.local.load import ExpectedPoint, Ledger

__all__ = ["Verdict", "compare", "verify"]


@dataclass
class Verdict:
    """What the check found."""

    checked: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    mismatched: int = 0
    unexpected: int = 0
    skipped_uncertain: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicate_effects or self.mismatched or self.unexpected)


def compare(
    expected: dict[tuple[str, str], ExpectedPoint], actual: dict[tuple[str, str], Point]
) -> Verdict:
    """Pure comparison of implied and stored state."""
    verdict = Verdict()
    for key, want in sorted(expected.items()):
        if want.uncertain:
            verdict.skipped_uncertain += 1
            continue
        verdict.checked += 1
        got = actual.get(key)
        if got is None:
            verdict.lost += want.version
            verdict.details.append(f"{key}: missing, expected version {want.version}")
        elif got.version < want.version:
            verdict.lost += want.version - got.version
            verdict.details.append(f"{key}: version {got.version} < expected {want.version}")
        elif got.version > want.version:
            verdict.duplicate_effects += got.version - want.version
            verdict.details.append(f"{key}: version {got.version} > expected {want.version}")
        elif list(got.coordinates) != want.coordinates:
            verdict.mismatched += 1
            verdict.details.append(f"{key}: at {got.coordinates}, expected {want.coordinates}")
    for key in sorted(set(actual) - set(expected)):
        verdict.unexpected += 1
        verdict.details.append(f"{key}: exists but no acknowledged command created it")
    return verdict


async def read_points(
    client: CoordinateClient, systems: set[str], *, timeout: float = 10.0
) -> dict[tuple[str, str], Point]:
    """Every point of ``systems``, read page by page through the SDK."""
    out: dict[tuple[str, str], Point] = {}
    for system_id in sorted(systems):
        after: str | None = None
        while True:
            page = await client.list_points(
                system_id=system_id, after=after, limit=1000, timeout=timeout
            )
            for p in page.points:
                out[(p.system_id, p.point_id)] = p
            if page.next_after is None:
                break
            after = page.next_after
    return out


async def verify(client: CoordinateClient, ledger: Ledger) -> Verdict:
    """Read back every system the ledger created and compare."""
    return compare(ledger.points, await read_points(client, ledger.systems))
