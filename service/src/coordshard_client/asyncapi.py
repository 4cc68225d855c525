"""The AsyncAPI 3.0 document of the Coordinate Service, generated from the code.

Built from ``messages.py`` (JSON Schemas of every model, via pydantic) and
``subjects.py`` (the subject grammar), so the contract a gateway reads cannot
drift from what the SDK sends and the worker accepts. ``coordshard asyncapi``
prints it; docs/asyncapi.yaml is that output, and a test fails when it is
stale. Pure: builds a dict, does no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from coordshard_client.messages import (
    HEADER_KEY,
    HEADER_REPLY,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    MAX_PAYLOAD_BYTES,
    WIRE_VERSION,
    CreatePoint,
    CreateSystem,
    DeletePoint,
    DeleteSystem,
    GetPoint,
    GetSystem,
    ListPoints,
    MovePoint,
    Outcome,
)
from coordshard_client.naming import DEFAULT_STREAM
from coordshard_client.subjects import BLOCK_TOKEN, DEFAULT_PREFIX, STREAM_META_SHARDS

__all__ = ["COMMAND_MODELS", "document"]

COMMAND_MODELS: Final[tuple[type[BaseModel], ...]] = (
    CreateSystem,
    DeleteSystem,
    CreatePoint,
    MovePoint,
    DeletePoint,
    GetSystem,
    GetPoint,
    ListPoints,
)
_REF: Final = "#/components/schemas/{model}"


def _op(model: type[BaseModel]) -> str:
    default = model.model_fields["op"].default
    assert isinstance(default, str)
    return default


def _asyncapi_schema(node: Any) -> Any:
    """Adapt pydantic's JSON Schema to AsyncAPI's Schema Object.

    The one difference that matters here: AsyncAPI's ``discriminator`` is the
    property name, not OpenAPI's ``{propertyName, mapping}`` object.
    """
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        disc = out.get("discriminator")
        if isinstance(disc, dict):
            out["discriminator"] = disc["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The idempotency key on a first attempt; the stream drops "
                "a second publish with the same id inside its duplicate window. Without "
                f"{HEADER_KEY}, it is the key, and is held to the same limits.",
            },
            HEADER_KEY: {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_LENGTH,
                "pattern": KEY_PATTERN,
                "description": "The idempotency key. A replay (a retry the stream "
                "deduplicated) carries a fresh Nats-Msg-Id and this same key; the worker "
                "answers it with the stored outcome. A key past these limits is "
                "dead-lettered with a validation outcome.",
            },
            HEADER_REPLY: {
                "type": "string",
                "description": "Core NATS subject the worker publishes the Outcome to.",
            },
        },
    }


def document(*, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document as a plain dict (dump it as YAML or JSON)."""
    models: list[type[BaseModel]] = [*COMMAND_MODELS, Outcome]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = _asyncapi_schema(dict(defs.get("$defs", {})))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for model in COMMAND_MODELS:
        op = _op(model)
        name = model.__name__
        envelope = f"{name}Envelope"
        schemas[envelope] = {
            "type": "object",
            "title": envelope,
            "description": f"Versioned envelope carrying one {op} command.",
            "properties": {
                "v": {"const": WIRE_VERSION},
                "command": {"$ref": _REF.format(model=name)},
            },
            "required": ["v", "command"],
            "additionalProperties": False,
        }
        messages[name] = {
            "name": name,
            "title": op,
            "summary": (model.__doc__ or op).strip().splitlines()[0],
            "contentType": "application/json",
            "headers": _headers_schema(),
            "payload": {"$ref": _REF.format(model=envelope)},
        }
        channels[op] = {
            "address": f"{prefix}.{{shard}}.{{system_id}}.{op}",
            "title": f"{op} commands",
            "description": f"JetStream stream {DEFAULT_STREAM!r} (WorkQueue) captures "
            f"{prefix}.<s>.*.* for each shard s < N (a publish to any other shard gets no "
            "ack); a worker owning the shard consumes it. A stream made with the blocks "
            "layout (every new one) stores the message, by its own subject transform, as "
            f"{prefix}.{BLOCK_TOKEN}.<block>.<shard>.<system_id>.<op>, block = partition(K, "
            "system_id) = shard mod K, K = blocks_of(N) (N up to 512, else the largest "
            "divisor of N up to 512): consumers and stream readers see that form; "
            "publishers never do.",
            "parameters": {
                "shard": {
                    "description": "FNV-1a 32-bit of the UTF-8 system id, modulo the "
                    "group's shard count N (nats-server's partition()). N is recorded in "
                    f"the stream's metadata under {STREAM_META_SHARDS!r}; a publisher "
                    "reads it there."
                },
                "system_id": {"description": "The system id: one NATS subject token."},
            },
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send-{op}"] = {
            "action": "send",
            "title": f"Send {op}",
            "summary": f"Publish a {op} command and receive its Outcome.",
            "channel": {"$ref": f"#/channels/{op}"},
            "messages": [{"$ref": f"#/channels/{op}/messages/{name}"}],
            "reply": {
                "address": {
                    "location": f"$message.header#/{HEADER_REPLY}",
                    "description": "The reply subject named in the command's header.",
                },
                "channel": {"$ref": "#/channels/outcome"},
                "messages": [{"$ref": "#/channels/outcome/messages/Outcome"}],
            },
        }
    messages["Outcome"] = {
        "name": "Outcome",
        "title": "outcome",
        "summary": "The worker's answer: a result or a typed error.",
        "contentType": "application/json",
        "payload": {"$ref": _REF.format(model="Outcome")},
    }
    channels["outcome"] = {
        "address": None,
        "title": "Outcomes",
        "description": "Core NATS reply subject chosen by the caller (dynamic).",
        "messages": {"Outcome": {"$ref": "#/components/messages/Outcome"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Coordinate Service",
            "version": str(WIRE_VERSION),
            "description": "Commands and queries on coordinate systems and points, "
            "sharded by system id over NATS JetStream. Every command for a system goes "
            "to that system's shard; workers apply each shard's commands one at a time, "
            f"in order, exactly once per idempotency key. Payloads are at most "
            f"{MAX_PAYLOAD_BYTES} bytes of JSON.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
