"""spec.parse: defaults, and a named field for every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from coordshard_operator.kube import spec
from coordshard_operator.kube.errors import InvalidSpecError


def body(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"shards": 8, "selector": {"matchLabels": {"app": "w"}}}
    raw.update(over)
    return {"metadata": {"name": "orders", "namespace": "ns", "generation": 3}, "spec": raw}


def test_minimal_spec_gets_the_schema_defaults() -> None:
    s = spec.parse(body())
    assert (s.name, s.namespace, s.generation, s.shards) == ("orders", "ns", 3, 8)
    assert s.stream == "COORDINATE"
    assert s.subject_prefix == "coordinate.cmd"
    assert s.reply_prefix == "_INBOX"
    assert s.grace_period_seconds == spec.DEFAULT_GRACE_SECONDS
    assert s.label_selector == "app=w"
    assert s.group == "orders"
    assert s.pins == {}


def test_full_spec_is_read_field_by_field() -> None:
    s = spec.parse(
        body(
            stream="S1",
            subjectPrefix="a.b",
            replyPrefix="_INBOX.gw",
            nats={
                "servers": ["nats://n:4222"],
                "credentialsSecretRef": {"name": "c"},
                "tlsSecretRef": {"name": "t"},
            },
            failover={"gracePeriodSeconds": 0},
            consumer={"ackWaitSeconds": 5, "maxAckPending": 10, "laneBlocks": 64},
            pins={"3": "w-1"},
        )
    )
    assert s.nats_servers == ("nats://n:4222",)
    assert s.credentials == spec.SecretRef(name="c", key="nats.creds")
    assert s.tls_secret == "t"
    assert s.lane_blocks == 64
    assert (s.grace_period_seconds, s.ack_wait_seconds, s.max_ack_pending) == (0, 5, 10)
    assert s.pins == {3: "w-1"}
    assert s.reply_prefix == "_INBOX.gw"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        pytest.param({"shards": 0}, "shards", id="zero-shards"),
        pytest.param({"shards": 4097}, "shards", id="too-many-shards"),
        pytest.param({"shards": "8"}, "shards", id="string-shards"),
        pytest.param({"selector": {"matchLabels": {}}}, "selector.matchLabels", id="no-labels"),
        pytest.param({"stream": "a.b"}, "stream", id="bad-stream"),
        pytest.param({"subjectPrefix": "a..b"}, "subjectPrefix", id="bad-prefix"),
        pytest.param({"replyPrefix": "_INBOX.>"}, "replyPrefix", id="bad-reply-prefix"),
        pytest.param({"pins": {"9": "w"}}, "pins", id="pin-out-of-range"),
        pytest.param(
            {"failover": {"gracePeriodSeconds": -1}},
            "failover.gracePeriodSeconds",
            id="negative-grace",
        ),
        pytest.param({"nats": {"servers": "nats://x"}}, "nats.servers", id="servers-not-list"),
        pytest.param({"consumer": {"laneBlocks": 513}}, "consumer.laneBlocks", id="lane-blocks"),
    ],
)
def test_invalid_spec_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        spec.parse(body(**over))
    assert info.value.field == field


def test_missing_shards_is_refused() -> None:
    b = body()
    del b["spec"]["shards"]
    with pytest.raises(InvalidSpecError, match="shards"):
        spec.parse(b)


def test_name_too_long_for_a_group_is_refused() -> None:
    b = body()
    b["metadata"]["name"] = "x" * 33
    with pytest.raises(InvalidSpecError) as info:
        spec.parse(b)
    assert info.value.field == "metadata.name"


def test_shards_are_immutable_once_in_force() -> None:
    s = spec.parse(body(shards=8))
    spec.check_immutable(None, s)
    spec.check_immutable(8, s)
    with pytest.raises(InvalidSpecError, match="immutable"):
        spec.check_immutable(16, s)


@pytest.mark.parametrize(("shards", "ok"), [(512, True), (4096, True), (1000, True), (521, False)])
def test_shards_above_512_need_a_divisor_from_256_to_512(shards: int, ok: bool) -> None:
    if ok:
        assert spec.parse(body(shards=shards)).shards == shards
    else:
        with pytest.raises(InvalidSpecError, match="no divisor from 256 to 512"):
            spec.parse(body(shards=shards))
