"""crds/ agrees with crd.py and subjects.py, and the schema says what the issue asks of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from coordshard_client.subjects import DEFAULT_SHARDS, MAX_SHARDS
from coordshard_operator.kube import crd

ROOT = Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "coordinateshards.yaml").read_text())
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def test_names_match_crd_module() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == f"{crd.PLURAL}.{crd.GROUP}"
    assert spec["group"] == crd.GROUP and VERSION["name"] == crd.VERSION
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        crd.KIND,
        crd.PLURAL,
        crd.SINGULAR,
    )
    assert names["shortNames"] == [crd.SHORT_NAME]
    assert spec["scope"] == "Namespaced"


def test_status_subresource_and_printer_columns() -> None:
    assert VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"]]
    assert columns == ["Shards", "Members", "Ready", "Epoch", "Age"]


def test_shards_are_bounded_and_immutable_by_cel() -> None:
    shards = SCHEMA["properties"]["spec"]["properties"]["shards"]
    assert (shards["minimum"], shards["maximum"]) == (1, MAX_SHARDS)
    assert "default" not in shards or shards["default"] == DEFAULT_SHARDS
    assert {"rule": "self == oldSelf", "message": "spec.shards is immutable"} in shards[
        "x-kubernetes-validations"
    ]


def test_chart_values_bound_shards_as_subjects_does() -> None:
    chart = ROOT / "charts" / "coordshard"
    schema = json.loads((chart / "values.schema.json").read_text())
    shards = schema["properties"]["example"]["properties"]["shards"]
    assert (shards["minimum"], shards["maximum"]) == (1, MAX_SHARDS)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert 1 <= values["example"]["shards"] <= MAX_SHARDS


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        pytest.param({"shards": 8, "selector": {"matchLabels": {"a": "b"}}}, True, id="minimal"),
        pytest.param({"shards": 8}, False, id="no-selector"),
        pytest.param(
            {
                "shards": 8,
                "selector": {"matchLabels": {"a": "b"}},
                "nats": {"servers": ["http://x"]},
            },
            False,
            id="bad-server-url",
        ),
        pytest.param(
            {
                "shards": 8,
                "selector": {"matchLabels": {"a": "b"}},
                "consumer": {"maxAckPending": 0},
            },
            False,
            id="zero-ack-pending",
        ),
    ],
)
def test_schema_accepts_and_refuses(spec: dict[str, Any], valid: bool) -> None:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors({"spec": spec}))
    assert (not errors) == valid, errors
