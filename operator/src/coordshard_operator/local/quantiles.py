"""The one percentile of the operator package: local mode's summary and every benchmark use it.

It lives in ``local`` because both can reach it there (the layers contract lets
``benchmarks`` import ``local``, not the other way round), and the rebalancer
has no use for it. Nearest rank on the ``n - 1`` grid, so ``q=0`` is the
minimum, ``q=1`` the maximum and ``q=0.5`` of an odd count the median; the
figures in docs/benchmarks.md were computed this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["min_samples", "percentile", "reported"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def min_samples(q: float) -> int:
    """The fewest values whose ``q`` quantile means something: ``ceil(1 / (1 - q))``
    (10 for p90, 20 for p95, 100 for p99). Below that the quantile is just the maximum
    (a p99 of 10 trials is their slowest) and must not be reported as a percentile."""
    return math.ceil(round(1 / (1 - q), 9)) if q < 1 else 1


def reported(values: Sequence[float], q: float, *, ndigits: int | None = None) -> float | None:
    """``percentile(values, q)`` (rounded to ``ndigits`` if given), or None when there
    are fewer than ``min_samples(q)`` values; tables print None as "-" and say how many
    samples a row has."""
    if len(values) < min_samples(q):
        return None
    value = percentile(values, q)
    return value if ndigits is None else round(value, ndigits)
