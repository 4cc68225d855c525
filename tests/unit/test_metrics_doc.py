"""docs/service.md lists every metric the worker and the operator export, as scraped
(a counter with its ``_total``), with its type; and nothing it lists is gone."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from coordshard_operator.kube.metrics import OperatorMetrics
from coordshard_service.metrics import Metrics

DOC = Path(__file__).parents[2] / "docs" / "service.md"


def exported(registry: CollectorRegistry) -> dict[str, str]:
    """Our metric names as scraped, with their types (the process collectors aside)."""
    return {
        m.name + ("_total" if m.type == "counter" else ""): m.type
        for m in registry.collect()
        if m.name.startswith("coordshard_")
    }


def test_every_metric_is_documented_with_its_type() -> None:
    metrics = exported(Metrics().registry) | exported(OperatorMetrics().registry)
    section = DOC.read_text().split("### Metrics", 1)[1].split("Renamed or removed", 1)[0]
    rows = dict(re.findall(r"^\| `(coordshard_\w+)` \| (\w+) \|", section, flags=re.M))
    assert rows == metrics
