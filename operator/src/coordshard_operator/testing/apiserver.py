"""A Kubernetes API-server double that an unmodified kopf runs against.

No real kube-apiserver can be had in CI here, so the operator is proven
against this double. It serves exactly what kopf 1.45 and the operator use,
with the semantics they rely on (docs/operator.md lists them):

* discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}/{v}``), including
  ``{plural}/status`` for CRDs with a status subresource;
* list + watch with one global monotonic resourceVersion; exactly one watch
  event per write, carrying the write's RV; a no-op patch keeps the RV and
  emits nothing; watches resume from an RV, and an RV older than the history
  kept gets an in-stream ``ERROR`` 410; BOOKMARKs; ``timeoutSeconds``;
* label selectors (``=``, ``==``, ``!=``, exists, ``!``, ``in``, ``notin``);
  an object moving in or out of a selector is ADDED/DELETED on that watch;
* merge-patch and json-patch (a failed ``test`` op is 422);
* the status subresource: the main resource ignores ``.status`` and
  ``/status`` ignores everything else; ``metadata.generation`` bumps on spec
  changes;
* finalizers and ``deletionTimestamp``; removing the last finalizer of a
  deleted object deletes it;
* Events (POST 201), CRD registration (a CRD makes its resource served);
* CRD-schema validation with defaults applied: a CR failing its
  openAPIV3Schema is 422 ``Invalid`` (a missing field is "Required value",
  as the real server says). CEL rules of the shapes our CRD uses
  (``testing.celrules``), only on a schema-valid object, as the real server;
  a CRD with any other rule is refused rather than half-checked;
* object names: a DNS-1123 subdomain (a label for namespaces);
* optionally, HTTPS and authentication as kube-apiserver does them with
  ``--tls-cert-file``, ``--client-ca-file`` and ``--token-auth-file``: a
  client certificate is asked for but not required, one the client CA did
  not sign fails the TLS handshake, and a verified one authenticates as its
  common name (tried first, as kube-apiserver does); a bearer token the
  server does not know, or any other ``Authorization``, is 401
  ``Unauthorized``; a request with no credentials is ``system:anonymous``,
  which RBAC refuses with 403 ``Forbidden``.

Every request is appended to ``requests`` (verb, group, resource) so a test
can check that the chart's RBAC grants exactly what was used; with
authentication on, ``users`` holds who each accepted request came as.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import re
import ssl
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jsonpatch
import jsonschema
from aiohttp import web

from coordshard_operator.testing.celrules import rule_errors, unknown_rules

if TYPE_CHECKING:  # certs needs cryptography (dev only); the double runs without it over HTTP
    from coordshard_operator.testing.certs import Issued

__all__ = ["ApiError", "ApiServer", "Request", "ResourceType", "Selector"]

Obj = dict[str, Any]
WATCH_HISTORY = 10_000
"""Write events kept for watches that resume from an RV; older ones get 410."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A request the server refuses; rendered as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    status_subresource: bool = False
    schema: Obj | None = None
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Request:
    """One request, in RBAC terms."""

    verb: str
    group: str
    resource: str
    """``pods``, ``coordinateshards/status``..."""
    namespace: str | None
    name: str | None
    label_selector: str | None = None


_SEL = re.compile(
    r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


@dataclass(frozen=True)
class Selector:
    """A parsed ``labelSelector``."""

    terms: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        if not text:
            return cls()
        parts = re.split(r",(?![^()]*\))", text)
        terms: list[tuple[str, str, frozenset[str]]] = []
        for part in parts:
            m = _SEL.match(part)
            if not m:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            neg, key, op, value, setop, values = m.groups()
            if neg:
                terms.append((key, "!", frozenset()))
            elif op:
                terms.append((key, "!=" if op == "!=" else "=", frozenset([value])))
            elif setop:
                vals = frozenset(v.strip() for v in values.split(",") if v.strip())
                terms.append((key, setop, vals))
            else:
                terms.append((key, "exists", frozenset()))
        return cls(tuple(terms))

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        labels = obj.get("metadata", {}).get("labels") or {}
        for key, op, values in self.terms:
            has, value = key in labels, labels.get(key)
            ok = {
                "=": has and value in values,
                "!=": not has or value not in values,
                "in": has and value in values,
                "notin": not has or value not in values,
                "exists": has,
                "!": not has,
            }[op]
            if not ok:
                return False
        return True


@dataclass
class _Watch:
    rtype: ResourceType
    namespace: str | None
    selector: Selector
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class _Change:
    rv: int
    rtype: ResourceType
    namespace: str | None
    before: Obj | None
    after: Obj | None
    """None for a deletion."""
    last: Obj
    """The object as the event carries it."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _body_of(obj: Obj) -> Obj:
    """Everything but metadata and status: what ``metadata.generation`` counts."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _apply_defaults(schema: Obj, value: Any) -> None:
    """Fill ``default``s in place, as the API server does on write."""
    if not isinstance(value, dict):
        if isinstance(value, list) and "items" in schema:
            for item in value:
                _apply_defaults(schema["items"], item)
        return
    for key, sub in (schema.get("properties") or {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _apply_defaults(sub, value[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            if key not in (schema.get("properties") or {}):
                _apply_defaults(extra, item)


def _fold_string_data(secret: Obj) -> None:
    """A Secret as stored: ``stringData`` merged into ``data`` (base64), data checked."""
    data = secret.setdefault("data", {})
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError) as e:
            raise ApiError(400, "BadRequest", f"Secret data[{key}]: illegal base64 data") from e


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _name_errors(t: ResourceType, name: str) -> Iterator[str]:
    """kube-apiserver's name rules: a DNS-1123 label for namespaces, a subdomain else."""
    label = t.plural == "namespaces"
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        kind = "label" if label else "subdomain"
        yield (
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 {kind} must '
            "consist of lower case alphanumeric characters, '-' or '.', and must start and "
            "end with an alphanumeric character"
        )


def _schema_error(e: jsonschema.ValidationError) -> str:
    """A jsonschema error in kube-apiserver's words where they differ (Required value)."""
    path = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "required":
        missing = re.match(r"^'([^']*)'", e.message)
        field = missing.group(1) if missing else e.message
        return f"{path + '.' if path else ''}{field}: Required value"
    return f"{path or '<root>'}: {e.message}"


BUILTINS = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, singular="namespace"),
    ResourceType("", "v1", "pods", "Pod", namespaced=True, singular="pod", status_subresource=True),
    ResourceType(
        "", "v1", "nodes", "Node", namespaced=False, singular="node", status_subresource=True
    ),
    ResourceType("", "v1", "events", "Event", namespaced=True, singular="event"),
    ResourceType("", "v1", "secrets", "Secret", namespaced=True, singular="secret"),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        singular="customresourcedefinition",
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True, singular="lease"),
)


def _refuse_unknown_rules(crd: Obj) -> None:
    """A CRD whose CEL rules the double cannot evaluate is refused: it would admit
    what kube-apiserver refuses."""
    for version in crd.get("spec", {}).get("versions") or []:
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        if unknown := list(unknown_rules(schema)):
            raise ApiError(
                422,
                "Invalid",
                f"the API-server double cannot evaluate the CEL rules {unknown} "
                "(add their shape to coordshard_operator.testing.celrules)",
            )


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
"""HTTP method -> the RBAC verb a refusal names."""


class ApiServer:
    """The double: state, the write rules, and an aiohttp app serving them.

    Tests drive it in-process (``create``/``patch``/``delete``) with the same
    rules the HTTP API applies; kopf reaches it over HTTP at ``url``.
    """

    def __init__(
        self,
        *,
        bookmark_interval: float = 5.0,
        tls: Issued | None = None,
        client_ca: bytes | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        """``tls``: serve HTTPS with this certificate (else plain HTTP, no authentication).

        ``client_ca`` (PEM) verifies client certificates; ``tokens`` maps bearer
        tokens to user names. Either one turns authentication on.
        """
        self.bookmark_interval = bookmark_interval
        self.tls = tls
        self.client_ca = client_ca
        self.tokens = dict(tokens or {})
        self.users: list[str] = []
        self.rv = 0
        self.types: dict[tuple[str, str, str], ResourceType] = {
            (t.group, t.version, t.plural): t for t in BUILTINS
        }
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        self.history: list[_Change] = []
        self.compacted = 0
        self.watches: list[_Watch] = []
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        for ns in ("default", "kube-system"):
            self.add_namespace(ns)

    def add_namespace(self, name: str) -> Obj:
        """Create a Namespace (kopf with ``-n`` watches only namespaces that exist)."""
        return self.create(self.find_type("", "namespaces"), None, {"metadata": {"name": name}})

    # --- lifecycle -----------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self._ssl_context())
        await site.start()
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:  # ssl loads a key pair from files only
            cert, key = f"{tmp}/tls.crt", f"{tmp}/tls.key"
            with open(cert, "wb") as f:
                f.write(self.tls.cert)
            with open(key, "wb") as f:
                f.write(self.tls.key)
            ctx.load_cert_chain(cert, key)
        if self.client_ca is not None:
            ctx.load_verify_locations(cadata=self.client_ca.decode())
            ctx.verify_mode = ssl.CERT_OPTIONAL  # Go's VerifyClientCertIfGiven
        return ctx

    @property
    def authenticating(self) -> bool:
        return self.client_ca is not None or bool(self.tokens)

    async def stop(self) -> None:
        for w in self.watches:
            w.queue.put_nowait(None)
        if self._runner:
            await self._runner.cleanup()

    def compact(self) -> None:
        """Forget history: every watch resuming from an older RV gets 410 Gone."""
        self.compacted = self.rv
        self.history.clear()

    def close_watches(self) -> None:
        """End every open watch stream (as an apiserver restart would)."""
        for w in self.watches:
            w.queue.put_nowait(None)

    # --- resource types ------------------------------------------------------

    def find_type(self, group: str, plural: str, version: str | None = None) -> ResourceType:
        for (g, v, p), t in self.types.items():
            if g == group and p == plural and version in (None, v):
                return t
        raise ApiError(404, "NotFound", f"the server could not find the resource {plural}")

    def _register_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for v in spec["versions"]:
            if not v.get("served", True):
                continue
            self.types[(spec["group"], v["name"], names["plural"])] = ResourceType(
                spec["group"],
                v["name"],
                names["plural"],
                names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", ""),
                status_subresource="status" in (v.get("subresources") or {}),
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                short_names=tuple(names.get("shortNames") or ()),
            )

    def _unregister_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        for v in spec["versions"]:
            self.types.pop((spec["group"], v["name"], spec["names"]["plural"]), None)

    # --- the write rules -----------------------------------------------------

    def _key(self, t: ResourceType, ns: str | None, name: str) -> tuple[str, str, str, str]:
        return (t.group, t.plural, ns or "" if t.namespaced else "", name)

    def get(self, t: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.objects.get(self._key(t, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{t.plural} "{name}" not found')
        return copy.deepcopy(obj)

    def list(self, t: ResourceType, ns: str | None, selector: Selector = Selector()) -> list[Obj]:
        return [
            copy.deepcopy(o)
            for (g, p, n, _), o in sorted(self.objects.items())
            if (g, p) == (t.group, t.plural)
            and (ns is None or not t.namespaced or n == ns)
            and selector.matches(o)
        ]

    def _validate(self, t: ResourceType, obj: Obj, old: Obj | None) -> None:
        if t.schema is None:
            return
        _apply_defaults(t.schema, obj)
        validator = jsonschema.Draft7Validator(t.schema)
        errors = [_schema_error(e) for e in validator.iter_errors(obj)]
        if not errors:  # as kube-apiserver: CEL rules run only on a schema-valid object
            errors = list(rule_errors(t.schema, obj, old))
        if errors:
            self._invalid(t, obj, errors)

    @staticmethod
    def _invalid(t: ResourceType, obj: Obj, errors: Sequence[str]) -> None:
        name = obj.get("metadata", {}).get("name")
        kind = f"{t.kind}.{t.group}" if t.group else t.kind
        raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: ' + "; ".join(errors))

    def _emit(self, t: ResourceType, ns: str | None, before: Obj | None, after: Obj | None) -> None:
        last = after if after is not None else before
        assert last is not None
        change = _Change(self.rv, t, ns, before, after, copy.deepcopy(last))
        self.history.append(change)
        if len(self.history) > WATCH_HISTORY:
            dropped = self.history.pop(0)
            self.compacted = dropped.rv
        for w in self.watches:
            self._deliver(w, change)

    @staticmethod
    def _deliver(w: _Watch, change: _Change) -> None:
        if (change.rtype.group, change.rtype.plural) != (w.rtype.group, w.rtype.plural):
            return
        if w.namespace is not None and change.rtype.namespaced and change.namespace != w.namespace:
            return
        was, now = w.selector.matches(change.before), w.selector.matches(change.after)
        kind = {(False, True): "ADDED", (True, True): "MODIFIED", (True, False): "DELETED"}
        if (was, now) in kind:
            w.queue.put_nowait({"type": kind[(was, now)], "object": change.last})

    def create_crd(self, body: Obj) -> Obj:
        """Register a CustomResourceDefinition (its type is served from then on)."""
        return self.create(
            self.find_type("apiextensions.k8s.io", "customresourcedefinitions"), None, body
        )

    def create(self, t: ResourceType, ns: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if t.namespaced:
            ns = ns or meta.get("namespace") or "default"
            meta["namespace"] = ns
        if bad_name := list(_name_errors(t, name)):
            self._invalid(t, obj, bad_name)
        if t.plural == "customresourcedefinitions":
            _refuse_unknown_rules(obj)
        key = self._key(t, ns, name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{t.plural} "{name}" already exists')
        obj["apiVersion"], obj["kind"] = t.api_version, t.kind
        if t.status_subresource and t.schema is not None:
            obj.pop("status", None)
        if t.plural == "secrets":
            _fold_string_data(obj)
        self._validate(t, obj, None)
        self.rv += 1
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(self.rv),
            creationTimestamp=_now(),
            generation=1,
        )
        self.objects[key] = obj
        if t.plural == "customresourcedefinitions":
            self._register_crd(obj)
        self._emit(t, ns, None, obj)
        return copy.deepcopy(obj)

    def _write(self, t: ResourceType, ns: str | None, old: Obj, new: Obj, *, status: bool) -> Obj:
        """Store ``new`` in place of ``old`` with the subresource rules; one event per change."""
        new = copy.deepcopy(new)
        if t.plural == "secrets":
            _fold_string_data(new)
        if t.status_subresource:
            if status:
                # A pod's /status takes metadata too (the kubelet's writes); a custom
                # resource's /status takes nothing but status, as kube-apiserver does.
                kept = new.get("metadata") if t.plural == "pods" else None
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if kept is not None:
                    new["metadata"] = kept
                if new["status"] is None:
                    new.pop("status")
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for fixed in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        if old["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        else:
            meta.pop("deletionTimestamp", None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # a no-op keeps the RV and emits nothing
        self._validate(t, new, old)
        if _body_of(new) != _body_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        key = self._key(t, ns, meta["name"])
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
            self._emit(t, ns, old, None)
            self._after_delete(t, new)
            return copy.deepcopy(new)
        self.objects[key] = new
        self._emit(t, ns, old, new)
        return copy.deepcopy(new)

    def patch(
        self,
        t: ResourceType,
        ns: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = "application/merge-patch+json",
        status: bool = False,
    ) -> Obj:
        old = self.get(t, ns, name)
        if content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(old, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"the json patch failed: {e}") from e
        elif content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            new = merge_patch(old, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch: {content_type}")
        return self._write(t, ns, old, new, status=status)

    def bind(self, ns: str, name: str, node: str) -> Obj:
        """The ``pods/{name}/binding`` subresource: set ``spec.nodeName`` once."""
        t = self.find_type("", "pods")
        old = self.get(t, ns, name)
        if old["spec"].get("nodeName"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                f'already assigned to node "{old["spec"]["nodeName"]}"',
            )
        new = copy.deepcopy(old)
        new["spec"]["nodeName"] = node
        return self._write(t, ns, old, new, status=False)

    def delete(
        self,
        t: ResourceType,
        ns: str | None,
        name: str,
        *,
        grace_period: int | None = None,
        uid: str | None = None,
    ) -> Obj:
        """Delete, as kube-apiserver does: ``uid`` is a precondition; a pod bound to a
        node is only marked (``deletionTimestamp`` = now + its grace period) until a
        delete with ``grace_period=0`` (the kubelet's) removes it."""
        old = self.get(t, ns, name)
        if uid is not None and uid != old["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {old['metadata']['uid']}",
            )
        if t.plural == "pods" and old["spec"].get("nodeName"):
            grace = grace_period
            if grace is None:
                grace = int(old["spec"].get("terminationGracePeriodSeconds", 30))
            marked = old["metadata"].get("deletionGracePeriodSeconds")
            if grace > 0 and (marked is None or grace < marked):
                return self._mark_deleting(t, ns, old, grace)
            if grace > 0:
                return old  # already Terminating, no shorter grace: nothing changes
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[self._key(t, ns, name)] = new
            self._emit(t, ns, old, new)
            return copy.deepcopy(new)
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        del self.objects[self._key(t, ns, name)]
        self._emit(t, ns, old, None)
        self._history_fix_last(gone)
        self._after_delete(t, gone)
        return gone

    def _mark_deleting(self, t: ResourceType, ns: str | None, old: Obj, grace: int) -> Obj:
        new = copy.deepcopy(old)
        when = datetime.now(UTC) + timedelta(seconds=grace)
        new["metadata"]["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[self._key(t, ns, old["metadata"]["name"])] = new
        self._emit(t, ns, old, new)
        return copy.deepcopy(new)

    def _history_fix_last(self, gone: Obj) -> None:
        """The DELETED event carries the deletion's RV, like the real server."""
        last = self.history[-1]
        last.last["metadata"]["resourceVersion"] = gone["metadata"]["resourceVersion"]

    def _after_delete(self, t: ResourceType, obj: Obj) -> None:
        if t.plural == "customresourcedefinitions":
            self._unregister_crd(obj)

    # --- the HTTP surface ----------------------------------------------------

    def _discovery(self, group: str, version: str) -> Obj:
        resources = []
        for t in self.types.values():
            if (t.group, t.version) != (group, version):
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.singular,
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": verbs,
                    "shortNames": list(t.short_names),
                }
            )
            if t.status_subresource:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", f"no resources in {group}/{version}")
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def _groups(self) -> Obj:
        versions: dict[str, list[str]] = {}
        for g, v, _ in self.types:
            if g and v not in versions.setdefault(g, []):
                versions[g].append(v)
        groups = [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in sorted(versions.items())
        ]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.authenticating:
                self.users.append(self._authenticate(request))
            return await self._route(request)
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)

    def _authenticate(self, request: web.Request) -> str:
        """Who the request comes as; 401 for unknown credentials, 403 for none."""
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:  # only a verified certificate gets here: a bad one fails the handshake
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme or token:
            user = self.tokens.get(token) if scheme.lower() == "bearer" else None
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return user
        verb = _VERBS.get(request.method, request.method.lower())
        raise ApiError(
            403,
            "Forbidden",
            f'forbidden: User "system:anonymous" cannot {verb} path "{request.path}"',
        )

    def _log(
        self,
        verb: str,
        t: ResourceType,
        sub: str | None,
        ns: str | None,
        name: str | None,
        selector: str | None = None,
    ) -> None:
        resource = f"{t.plural}/{sub}" if sub else t.plural
        self.requests.append(Request(verb, t.group, resource, ns, name, selector))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            return web.json_response(self._groups())
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"no route for {request.path}")
        if not rest:
            return web.json_response(self._discovery(group, version))
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        sub = rest[2] if len(rest) > 2 else None
        t = self.find_type(group, plural, version)
        if sub == "binding" and t.plural == "pods" and name and request.method == "POST":
            self._log("create", t, sub, ns, name)
            body = await request.json()
            self.bind(ns or "default", name, body["target"]["name"])
            success = {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
            return web.json_response(success, status=201)
        if sub not in (None, "status") or (sub == "status" and not t.status_subresource):
            raise ApiError(404, "NotFound", f"no subresource {sub} of {plural}")
        method = request.method
        if name is None and method == "GET":
            selector = Selector.parse(request.query.get("labelSelector"))
            if request.query.get("watch") in ("true", "1"):
                self._log("watch", t, None, ns, None, request.query.get("labelSelector"))
                return await self._watch(request, t, ns, selector)
            self._log("list", t, None, ns, None, request.query.get("labelSelector"))
            items = self.list(t, ns, selector)
            return web.json_response(
                {
                    "kind": f"{t.kind}List",
                    "apiVersion": t.api_version,
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        if name is None and method == "POST":
            self._log("create", t, None, ns, None)
            body = await request.json()
            return web.json_response(self.create(t, ns, body), status=201)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "GET":
            self._log("get", t, sub, ns, name)
            return web.json_response(self.get(t, ns, name))
        if method == "PATCH":
            self._log("patch", t, sub, ns, name)
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            patch = await request.json()
            obj = self.patch(t, ns, name, patch, content_type=content_type, status=sub == "status")
            return web.json_response(obj)
        if method == "PUT":
            self._log("update", t, sub, ns, name)
            old, body = self.get(t, ns, name), await request.json()
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            return web.json_response(self._write(t, ns, old, body, status=sub == "status"))
        if method == "DELETE":
            self._log("delete", t, None, ns, name)
            options = await request.json() if request.can_read_body else {}
            grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
            uid = (options.get("preconditions") or {}).get("uid")
            obj = self.delete(
                t, ns, name, grace_period=None if grace is None else int(grace), uid=uid
            )
            return web.json_response(obj)
        raise ApiError(405, "MethodNotAllowed", method)

    async def _watch(
        self, request: web.Request, t: ResourceType, ns: str | None, selector: Selector
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = int(request.query.get("resourceVersion") or 0)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        watch = _Watch(t, ns, selector)
        if since and since < self.compacted:
            gone = ApiError(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            watch.queue.put_nowait({"type": "ERROR", "object": gone.status()})
            watch.queue.put_nowait(None)
        elif since:
            for change in self.history:
                if change.rv > since:
                    self._deliver(watch, change)
        else:
            for obj in self.list(t, ns, selector):
                watch.queue.put_nowait({"type": "ADDED", "object": obj})
        self.watches.append(watch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(left, self.bookmark_interval)):
                        event = await watch.queue.get()
                except TimeoutError:
                    if not bookmarks:
                        continue
                    event = {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": t.api_version,
                            "kind": t.kind,
                            "metadata": {"resourceVersion": str(self.rv)},
                        },
                    }
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(watch)
        return response


def crd_type(server: ApiServer, crd: Mapping[str, Any]) -> ResourceType:
    """Register ``crd`` (as a CRD create would) and return its served type."""
    t = server.find_type("apiextensions.k8s.io", "customresourcedefinitions")
    server.create(t, None, dict(crd))
    return server.find_type(crd["spec"]["group"], crd["spec"]["names"]["plural"])
