"""Contract tests of the API-server double: one per rule kopf relies on.

Each test speaks HTTP, as kopf does, so what passes here is what kopf sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from coordshard_operator.testing.apiserver import ApiError, ApiServer

from .conftest import load_crd

pytestmark = pytest.mark.integration

CRS = "/apis/coordshard.io/v1alpha1/namespaces/ns/coordinateshards"
PODS = "/api/v1/namespaces/ns/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


def cr(name: str = "orders", shards: int = 4, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordshard.io/v1alpha1",
        "kind": "CoordinateShards",
        "metadata": {"name": name},
        "spec": {"shards": shards, "selector": {"matchLabels": {"app": "w"}}, **spec},
    }


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {"app": "w"}}, "spec": {}}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, **kw) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def read_events(
    http: aiohttp.ClientSession, url: str, n: int, *, timeout: float = 5
) -> list[dict[str, Any]]:
    """The first ``n`` events of a watch (the stream is closed afterwards)."""
    out: list[dict[str, Any]] = []
    async with http.get(url) as r:
        assert r.status == 200

        async def read() -> None:
            while len(out) < n:
                line = await r.content.readline()
                assert line, "watch ended early"
                out.append(json.loads(line))

        await asyncio.wait_for(read(), timeout)
    return out


async def test_discovery_lists_core_resources_and_the_crd_with_status(
    http: aiohttp.ClientSession,
) -> None:
    _, core = await call(http, "GET", "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "namespaces", "events"} <= names
    assert all(
        {"name", "singularName", "namespaced", "kind", "verbs"} <= r.keys()
        for r in core["resources"]
    )
    _, groups = await call(http, "GET", "/apis")
    assert "coordshard.io" in {g["name"] for g in groups["groups"]}
    _, ours = await call(http, "GET", "/apis/coordshard.io/v1alpha1")
    assert {"coordinateshards", "coordinateshards/status"} <= {r["name"] for r in ours["resources"]}
    status, err = await call(http, "GET", "/apis/kopf.dev/v1")
    assert (status, err["kind"], err["code"]) == (404, "Status", 404)


async def test_every_write_gets_a_new_rv_and_exactly_one_event(
    http: aiohttp.ClientSession,
) -> None:
    _, created = await call(http, "POST", CRS, cr())
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    _, listing = await call(http, "GET", CRS)
    since = listing["metadata"]["resourceVersion"]
    _, patched = await call(
        http, "PATCH", f"{CRS}/orders", {"metadata": {"labels": {"a": "b"}}}, headers=MERGE
    )
    assert int(patched["metadata"]["resourceVersion"]) > int(since)
    events = await read_events(http, f"{CRS}?watch=true&resourceVersion={since}", 1)
    assert events[0]["type"] == "MODIFIED"
    assert (
        events[0]["object"]["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    )


async def test_a_noop_patch_keeps_the_rv_and_emits_nothing(
    apiserver: ApiServer, http: aiohttp.ClientSession
) -> None:
    _, created = await call(http, "POST", CRS, cr())
    history = len(apiserver.history)
    _, same = await call(http, "PATCH", f"{CRS}/orders", {"spec": {"shards": 4}}, headers=MERGE)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert len(apiserver.history) == history


async def test_an_expired_rv_is_an_in_stream_410(
    apiserver: ApiServer, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", CRS, cr())
    await call(http, "POST", CRS, cr("second"))
    apiserver.compact()
    events = await read_events(http, f"{CRS}?watch=true&resourceVersion=2", 1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_bookmarks_keep_a_quiet_watch_alive(http: aiohttp.ClientSession) -> None:
    _, listing = await call(http, "GET", CRS)
    rv = listing["metadata"]["resourceVersion"]
    events = await read_events(
        http, f"{CRS}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}", 1
    )
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["metadata"]["resourceVersion"] == rv


async def test_watch_timeout_ends_the_stream(http: aiohttp.ClientSession) -> None:
    async with http.get(f"{PODS}?watch=true&timeoutSeconds=1") as r:
        assert await asyncio.wait_for(r.content.read(), 5) == b""


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("app=w", ["a", "b"], id="equals"),
        pytest.param("app==w,tier!=x", ["a"], id="double-equals-and-not"),
        pytest.param("tier", ["b"], id="exists"),
        pytest.param("!tier", ["a", "c"], id="not-exists"),
        pytest.param("app in (w, v)", ["a", "b", "c"], id="in"),
        pytest.param("app notin (w)", ["c"], id="notin"),
    ],
)
async def test_label_selectors_filter_lists(
    http: aiohttp.ClientSession, selector: str, expected: list[str]
) -> None:
    await call(http, "POST", PODS, pod("a", app="w"))
    await call(http, "POST", PODS, pod("b", app="w", tier="x"))
    await call(http, "POST", PODS, pod("c", app="v"))
    _, listing = await call(http, "GET", PODS, params={"labelSelector": selector})
    assert [p["metadata"]["name"] for p in listing["items"]] == expected


async def test_leaving_a_selector_is_deleted_on_that_watch(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("a"))
    _, listing = await call(http, "GET", PODS)
    rv = listing["metadata"]["resourceVersion"]
    await call(
        http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "other"}}}, headers=MERGE
    )
    await call(http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "w"}}}, headers=MERGE)
    events = await read_events(
        http, f"{PODS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dw", 2
    )
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_json_patch_with_a_failed_test_is_422(http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", CRS, cr())
    rv = created["metadata"]["resourceVersion"]
    ops = [{"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]
    status, err = await call(
        http,
        "PATCH",
        f"{CRS}/orders",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "999"}, *ops],
        headers=JSONPATCH,
    )
    assert (status, err["reason"]) == (422, "Invalid")
    status, ok = await call(
        http,
        "PATCH",
        f"{CRS}/orders",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, *ops],
        headers=JSONPATCH,
    )
    assert status == 200 and ok["metadata"]["finalizers"] == ["x/y"]


async def test_status_subresource_splits_writes(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", CRS, cr())
    _, main = await call(http, "PATCH", f"{CRS}/orders", {"status": {"epoch": 5}}, headers=MERGE)
    assert "status" not in main and main["metadata"]["generation"] == 1
    _, st = await call(
        http,
        "PATCH",
        f"{CRS}/orders/status",
        {"status": {"epoch": 5}, "spec": {"stream": "OTHER"}},
        headers=MERGE,
    )
    assert st["status"]["epoch"] == 5 and st["spec"]["stream"] == "COORDINATE"
    assert st["metadata"]["generation"] == 1
    _, spec = await call(
        http, "PATCH", f"{CRS}/orders", {"spec": {"stream": "OTHER"}}, headers=MERGE
    )
    assert spec["metadata"]["generation"] == 2 and spec["status"]["epoch"] == 5


async def test_finalizers_hold_a_deleted_object_until_removed(
    http: aiohttp.ClientSession,
) -> None:
    body = cr()
    body["metadata"]["finalizers"] = ["x/y"]
    _, created = await call(http, "POST", CRS, body)
    rv = created["metadata"]["resourceVersion"]
    _, deleting = await call(http, "DELETE", f"{CRS}/orders")
    assert deleting["metadata"]["deletionTimestamp"]
    status, _ = await call(http, "GET", f"{CRS}/orders")
    assert status == 200
    await call(http, "PATCH", f"{CRS}/orders", {"metadata": {"finalizers": None}}, headers=MERGE)
    status, gone = await call(http, "GET", f"{CRS}/orders")
    assert (status, gone["reason"]) == (404, "NotFound")
    events = await read_events(http, f"{CRS}?watch=true&resourceVersion={rv}", 2)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


async def test_events_are_created(http: aiohttp.ClientSession) -> None:
    event = {"metadata": {"generateName": "orders."}, "reason": "ShardsMoved", "type": "Normal"}
    status, created = await call(http, "POST", "/api/v1/namespaces/ns/events", event)
    assert status == 201 and created["metadata"]["name"].startswith("orders.")


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"shards": 0}, id="shards-below-min"),
        pytest.param({"shards": "8"}, id="shards-not-int"),
        pytest.param({"selector": {}}, id="selector-without-labels"),
        pytest.param({"failover": {"gracePeriodSeconds": -1}}, id="negative-grace"),
    ],
)
async def test_a_cr_failing_the_schema_is_422(
    http: aiohttp.ClientSession, spec: dict[str, Any]
) -> None:
    body = cr()
    body["spec"].update(spec)
    status, err = await call(http, "POST", CRS, body)
    assert (status, err["kind"], err["reason"]) == (422, "Status", "Invalid")


async def test_schema_defaults_are_applied_and_shards_are_immutable(
    http: aiohttp.ClientSession,
) -> None:
    _, created = await call(http, "POST", CRS, cr())
    assert created["spec"]["stream"] == "COORDINATE"
    assert "failover" not in created["spec"]  # as Kubernetes: no defaults inside absent objects
    status, err = await call(http, "PATCH", f"{CRS}/orders", {"spec": {"shards": 8}}, headers=MERGE)
    assert status == 422 and "immutable" in err["message"]


async def test_requests_are_logged_in_rbac_terms(
    apiserver: ApiServer, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", CRS, cr())
    await call(http, "PATCH", f"{CRS}/orders/status", {"status": {"epoch": 1}}, headers=MERGE)
    await call(http, "GET", PODS)
    logged = {(r.verb, r.group, r.resource) for r in apiserver.requests}
    assert {
        ("create", "coordshard.io", "coordinateshards"),
        ("patch", "coordshard.io", "coordinateshards/status"),
        ("list", "", "pods"),
    } <= logged


async def test_secrets_store_string_data_as_base64_data_and_refuse_bad_base64(
    apiserver: ApiServer, http: aiohttp.ClientSession
) -> None:
    secrets = "/api/v1/namespaces/ns/secrets"
    body = {"metadata": {"name": "nats"}, "stringData": {"nkey.seed": "SU..."}}
    status, created = await call(http, "POST", secrets, body)
    assert status == 201 and created["kind"] == "Secret" and "stringData" not in created
    status, got = await call(http, "GET", f"{secrets}/nats")
    assert status == 200 and base64.b64decode(got["data"]["nkey.seed"]) == b"SU..."
    patch = {"stringData": {"nkey.seed": "SV..."}}
    _, patched = await call(http, "PATCH", f"{secrets}/nats", patch, headers=MERGE)
    assert base64.b64decode(patched["data"]["nkey.seed"]) == b"SV..."
    assert int(patched["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
    status, _ = await call(http, "GET", f"{secrets}/other")
    assert status == 404
    status, _ = await call(http, "POST", secrets, {"metadata": {"name": "x"}, "data": {"k": "!"}})
    assert status == 400
    assert ("get", "", "secrets") in {(r.verb, r.group, r.resource) for r in apiserver.requests}


def test_a_crd_with_a_cel_rule_the_double_cannot_evaluate_is_refused() -> None:
    """Better no double than one that admits what kube-apiserver refuses."""
    crd = load_crd()
    crd["metadata"]["name"] = "others.coordshard.io"
    crd["spec"]["names"] = {"kind": "Other", "plural": "others", "singular": "other"}
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["x-kubernetes-validations"] = [{"rule": "self.shards % 2 == 0"}]
    server = ApiServer()
    with pytest.raises(ApiError) as refused:
        server.create_crd(crd)
    assert refused.value.code == 422 and "self.shards % 2 == 0" in refused.value.message
