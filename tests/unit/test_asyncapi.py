"""The committed AsyncAPI document is current and valid against the official 3.0.0 schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from coordshard_client.asyncapi import COMMAND_MODELS, document
from coordshard_client.messages import COMMAND_OPS, QUERY_OPS
from coordshard_operator.cli.asyncapi import render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
SCHEMA = ROOT / "tests" / "data" / "asyncapi" / "3.0.0-without-id.json"


def test_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run `coordshard asyncapi > docs/asyncapi.yaml`"
    )


def test_document_validates_against_the_asyncapi_3_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(yaml.safe_load(COMMITTED.read_text())), key=str)
    assert errors == []


def test_the_schema_rejects_a_broken_document() -> None:
    """Guard against a validator that accepts anything."""
    broken = document()
    broken["operations"]["send-create-system"]["action"] = "shout"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert list(validator.iter_errors(broken))


def test_every_op_has_a_channel_and_an_operation() -> None:
    doc = document()
    ops = {m.model_fields["op"].default for m in COMMAND_MODELS}
    assert ops == set(COMMAND_OPS) | set(QUERY_OPS)
    assert set(doc["channels"]) == ops | {"outcome"}
    assert {f"send-{op}" for op in ops} == set(doc["operations"])
