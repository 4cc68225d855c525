"""The CRD's validation, side by side: the API-server double and the real kube-apiserver.

One table of CoordinateShards, each run against both backends: the double
(in-process, with the CRD registered) and the real control plane (the CRD
from crds/ installed and Established). A case the real server refuses and
the double admits, or the other way round, is a lie of the double: the
double is fixed, not the case.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from coordshard_operator.testing.apiserver import ApiError, ApiServer
from coordshard_operator.testing.kuberest import MERGE_PATCH, KubeRest

from .conftest import load_crd

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


class Backend(Protocol):
    def create(self, body: Obj) -> tuple[int, Obj]: ...
    def patch(self, name: str, patch: Obj) -> tuple[int, Obj]: ...


class Double:
    """The double, in-process: the write rules its HTTP surface applies."""

    def __init__(self) -> None:
        self.server = ApiServer()
        self.server.create_crd(load_crd())
        self.crs = self.server.find_type("coordshard.io", "coordinateshards")

    def create(self, body: Obj) -> tuple[int, Obj]:
        try:
            return 201, self.server.create(self.crs, "ns", body)
        except ApiError as e:
            return e.code, e.status()

    def patch(self, name: str, patch: Obj) -> tuple[int, Obj]:
        try:
            return 200, self.server.patch(self.crs, "ns", name, patch)
        except ApiError as e:
            return e.code, e.status()


class Real:
    """kube-apiserver, in a namespace of the test's own."""

    def __init__(self, kube: KubeRest, namespace: str) -> None:
        self.kube = kube
        self.path = f"/apis/coordshard.io/v1alpha1/namespaces/{namespace}/coordinateshards"

    def create(self, body: Obj) -> tuple[int, Obj]:
        status, answer = self.kube.request("POST", self.path, body)
        return status, answer

    def patch(self, name: str, patch: Obj) -> tuple[int, Obj]:
        status, answer = self.kube.request(
            "PATCH", f"{self.path}/{name}", patch, content_type=MERGE_PATCH
        )
        return status, answer


@pytest.fixture(params=["double", "real"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "double":
        yield Double()
    else:
        kube: KubeRest = request.getfixturevalue("kube")
        yield Real(kube, request.getfixturevalue("namespace"))


def cr(name: str = "orders", **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "coordshard.io/v1alpha1",
        "kind": "CoordinateShards",
        "metadata": {"name": name},
        "spec": {"shards": 4, "selector": {"matchLabels": {"app": "w"}}},
    }
    body["spec"].update(spec)
    return body


def without(key: str) -> Obj:
    body = cr()
    del body["spec"][key]
    return body


def edited(change: Callable[[Obj], None]) -> Obj:
    body = copy.deepcopy(cr())
    change(body)
    return body


INVALID = [
    pytest.param(cr(shards=0), "spec.shards", id="shards-below-min"),
    pytest.param(cr(shards=4097), "spec.shards", id="shards-above-max"),
    pytest.param(cr(shards="8"), "spec.shards", id="shards-not-int"),
    pytest.param(without("shards"), "spec.shards", id="shards-missing"),
    pytest.param(without("selector"), "spec.selector", id="selector-missing"),
    pytest.param(edited(lambda b: b.pop("spec")), "spec", id="spec-missing"),
    pytest.param(cr(selector={}), "spec.selector.matchLabels", id="selector-without-labels"),
    pytest.param(cr(selector={"matchLabels": {}}), "spec.selector.matchLabels", id="no-labels"),
    pytest.param(
        cr(selector={"matchLabels": {"app": 1}}), "spec.selector.matchLabels", id="label-not-string"
    ),
    pytest.param(cr(stream="has space"), "spec.stream", id="stream-pattern"),
    pytest.param(cr(stream="S" * 33), "spec.stream", id="stream-too-long"),
    pytest.param(cr(subjectPrefix="a..b"), "spec.subjectPrefix", id="subject-prefix-pattern"),
    pytest.param(cr(replyPrefix="r" * 201), "spec.replyPrefix", id="reply-prefix-too-long"),
    pytest.param(cr(nats={"servers": []}), "spec.nats.servers", id="no-servers"),
    pytest.param(cr(nats={"servers": ["http://x:4222"]}), "spec.nats.servers", id="server-scheme"),
    pytest.param(
        cr(nats={"credentialsSecretRef": {"key": "k"}}),
        "spec.nats.credentialsSecretRef.name",
        id="secret-ref-without-name",
    ),
    pytest.param(
        cr(failover={"gracePeriodSeconds": -1}), "spec.failover.gracePeriodSeconds", id="grace-neg"
    ),
    pytest.param(
        cr(failover={"gracePeriodSeconds": 3601}),
        "spec.failover.gracePeriodSeconds",
        id="grace-above-max",
    ),
    pytest.param(cr(consumer={"ackWaitSeconds": 0}), "spec.consumer.ackWaitSeconds", id="ack-0"),
    pytest.param(cr(consumer={"maxAckPending": 0}), "spec.consumer.maxAckPending", id="pending-0"),
    pytest.param(cr(consumer={"laneBlocks": 0}), "spec.consumer.laneBlocks", id="lane-blocks-0"),
    pytest.param(
        cr(consumer={"laneBlocks": 513}), "spec.consumer.laneBlocks", id="lane-blocks-513"
    ),
    pytest.param(cr(pins={"a": "w-0"}), "pin keys are shard numbers", id="pin-key-not-a-number"),
    pytest.param(cr(pins={"0": 1}), "spec.pins", id="pin-value-not-a-string"),
    pytest.param(cr("o" * 33), "at most 32 characters", id="name-longer-than-32"),
    pytest.param(cr("Orders"), "metadata.name", id="name-not-a-dns-subdomain"),
]


@pytest.mark.parametrize(("body", "names"), INVALID)
def test_an_invalid_coordinateshards_is_refused(backend: Backend, body: Obj, names: str) -> None:
    status, answer = backend.create(body)
    assert (status, answer.get("kind"), answer.get("reason")) == (422, "Status", "Invalid")
    assert names in answer["message"]


VALID = [
    pytest.param(cr(), id="minimal"),
    pytest.param(cr("o" * 32), id="name-of-32"),
    pytest.param(cr(pins={"0": "w-0", "17": "w-1"}), id="pins"),
    pytest.param(cr(shards=4096, nats={"servers": ["tls://n:4222"]}), id="max-shards-tls"),
]


@pytest.mark.parametrize("body", VALID)
def test_a_valid_coordinateshards_is_admitted_with_the_same_defaults(
    backend: Backend, body: Obj
) -> None:
    status, created = backend.create(body)
    assert status == 201, created
    assert created["spec"]["stream"] == "COORDINATE"
    assert created["spec"]["subjectPrefix"] == "coordinate.cmd"
    assert created["spec"]["replyPrefix"] == "_INBOX"
    assert "failover" not in created["spec"]  # no defaults inside absent objects


def test_defaults_are_applied_inside_a_given_object(backend: Backend) -> None:
    status, created = backend.create(
        cr(failover={}, consumer={}, nats={"nkeySecretRef": {"name": "s"}})
    )
    assert status == 201, created
    assert created["spec"]["failover"] == {"gracePeriodSeconds": 10}
    assert created["spec"]["consumer"] == {
        "ackWaitSeconds": 30, "maxAckPending": 1000, "laneBlocks": 32,
    }  # fmt: skip
    assert created["spec"]["nats"]["nkeySecretRef"] == {"name": "s", "key": "nkey.seed"}


def test_shards_are_immutable(backend: Backend) -> None:
    assert backend.create(cr())[0] == 201
    status, answer = backend.patch("orders", {"spec": {"shards": 8}})
    assert (status, answer["reason"]) == (422, "Invalid")
    assert "spec.shards is immutable" in answer["message"]
    status, answer = backend.patch("orders", {"spec": {"stream": "OTHER"}})
    assert status == 200 and answer["metadata"]["generation"] == 2
