"""The one percentile of the operator package: local mode's summary and every benchmark use it.

It lives in ``local`` because both can reach it there (the layers contract lets
``benchmarks`` import ``local``, not the other way round), and the rebalancer
has no use for it. Nearest rank on the ``n - 1`` grid, so ``q=0`` is the
minimum, ``q=1`` the maximum and ``q=0.5`` of an odd count the median; the
figures in docs/benchmarks.md were computed this way.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
