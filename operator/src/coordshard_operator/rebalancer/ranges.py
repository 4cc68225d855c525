"""The one text form of a shard set: ``[0, 1, 2, 5]`` ⇄ ``"0-2,5"``.

Pure. The CR status (``assignment``, ``unassignedShards``), Events, ``coordshard
plan`` and local mode's live view all show shard sets this way; the empty set
is the empty string (a table that wants a visible placeholder adds its own).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_ranges", "parse_ranges"]


def format_ranges(shards: Iterable[int]) -> str:
    """Shards as compact ranges, ascending, duplicates folded: ``[5, 0, 1, 2]`` -> ``"0-2,5"``."""
    out: list[str] = []
    run: list[int] = []
    for s in sorted(set(shards)):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_ranges(text: str) -> list[int]:
    """The inverse of ``format_ranges``: ``"0-2,5"`` -> ``[0, 1, 2, 5]``; ``""`` -> ``[]``.

    Raises ValueError on anything ``format_ranges`` does not write.
    """
    shards: list[int] = []
    for part in filter(None, text.split(",")):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"not a shard range: {part!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"not a shard range: {part!r}")
        shards += range(first, last + 1)
    return shards
