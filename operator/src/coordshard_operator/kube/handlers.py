"""The kopf handlers: thin adapters from kopf to ``reconcile``.

* ``configure`` (startup) reads the settings once, tunes kopf (watch
  timeouts as integers, server-side pod label selector, annotation storage
  under ``coordshard.io``, our finalizer) and fills ``memo``;
* ``login`` captures the credentials so the daemon can write status;
* ``pod_event`` (``kopf.on.event``: no finalizers or annotations on pods)
  records pods and wakes the daemons of their namespace;
* ``rebalance`` (a daemon per CR) runs parse -> reconcile -> patch -> sleep
  on every wake-up (debounced), at the grace deadline of a NotReady
  pod and at the periodic resync;
* ``spec_changed`` wakes the daemon when the spec is edited;
* ``release`` (on delete; kopf holds our finalizer until it succeeds)
  deletes the group's consumers. The stream and its data stay.

Errors are translated here and only here: an invalid spec is reported in
status (the daemon keeps running, so a fixed spec is picked up), a
TransientError is reported and retried after its delay.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from coordshard_operator.kube import crd, spec
from coordshard_operator.kube.errors import InvalidSpecError
from coordshard_operator.kube.kubeapi import KubeApi
from coordshard_operator.kube.metrics import OperatorMetrics
from coordshard_operator.kube.reconcile import ReconcileResult, reconcile
from coordshard_operator.kube.runtime import Runtime
from coordshard_operator.kube.settings import OperatorSettings
from coordshard_operator.rebalancer.errors import TransientError

__all__ = ["configure", "login", "pod_event", "rebalance", "release", "spec_changed"]

CR = (crd.GROUP, crd.VERSION, crd.PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    opts = OperatorSettings()
    settings.watching.server_timeout = opts.watch_server_timeout
    settings.watching.client_timeout = opts.watch_client_timeout
    settings.watching.label_selectors["pods"] = crd.LABEL_WORKER
    settings.persistence.finalizer = crd.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=crd.ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=crd.ANNOTATION_PREFIX
    )
    settings.peering.lifetime = opts.peering_lifetime
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = crd.REPORTING_COMPONENT
    runtime = Runtime(settings=opts)
    if opts.metrics_port:
        runtime.metrics.serve(opts.metrics_port)
    memo.runtime = runtime


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.close()
    kube: KubeApi | None = memo.get("kube_api")
    if kube is not None:
        await kube.close()


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    runtime: Runtime | None = memo.get("runtime")  # startup, which reads the settings, runs first
    server = (runtime.settings if runtime is not None else OperatorSettings()).kube_server
    info: kopf.ConnectionInfo | None
    if server:
        info = kopf.ConnectionInfo(server=server, default_namespace="default")
    else:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    memo.connection_info = info
    return info


@kopf.on.probe(id="pods")
def pods_seen(memo: kopf.Memo, **_: Any) -> int:
    runtime: Runtime = memo.runtime
    return len(runtime.pods)


@kopf.on.event("pods", labels={crd.LABEL_WORKER: kopf.PRESENT})
def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.pod_event(event.get("type"), dict(event["object"]))


def _kube(memo: kopf.Memo) -> KubeApi:
    kube: KubeApi | None = memo.get("kube_api")
    if kube is None:
        # The current login, not the first: kopf logs in again after a 401.
        kube = memo.kube_api = KubeApi(lambda: memo.connection_info)
    return kube


@kopf.daemon(*CR, cancellation_timeout=5)
async def rebalance(
    *,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """parse → reconcile → patch → sleep, until the CR goes (``reconcile`` does the rest)."""
    runtime: Runtime = memo.runtime
    opts = runtime.settings
    namespace = namespace or "default"
    wake = runtime.waker(namespace, name)
    previous: dict[str, Any] = dict(body.get("status") or {})
    labels = {"namespace": namespace, "name": name}
    listed_at = datetime.now(UTC)  # kopf has just listed the pods
    try:
        while not stopped:
            wake.clear()
            now = datetime.now(UTC)
            if (now - listed_at).total_seconds() >= opts.resync_seconds:
                listed_at = now
                await _prune_ghost_pods(memo, runtime, namespace, logger)
            result = await reconcile(
                body=body,
                pods=runtime.pods_in(namespace),
                engine_for=lambda desired: runtime.engine(desired, secrets=_kube(memo).get_secret),
                previous=previous,
                now=now,
            )
            _announce(body, result, runtime.metrics, labels, logger)
            delay = result.next_pass_in(opts.resync_seconds, now=now)
            if result.status != previous:
                try:
                    if not await _kube(memo).patch_status(
                        namespace=namespace, name=name, status=result.status, previous=previous
                    ):
                        return
                    previous = result.status
                except TransientError as e:
                    logger.warning("%s", e)
                    delay = min(delay, e.delay)
            await _sleep(wake, delay, stopped, debounce=opts.debounce_seconds)
    finally:
        runtime.forget(namespace, name)
        runtime.metrics.forget(namespace=namespace, name=name)  # after its last report


async def _prune_ghost_pods(
    memo: kopf.Memo, runtime: Runtime, namespace: str, logger: kopf.Logger
) -> None:
    """List the namespace's worker pods and forget the cached ones that are gone
    (``Runtime.prune_pods`` says why kopf's watch alone can miss them)."""
    try:
        names, version = await _kube(memo).list_pod_names(namespace)
    except TransientError as e:
        logger.warning("%s", e)
        return
    for ghost in runtime.prune_pods(namespace, listed=names, list_version=version):
        logger.info("pod %s is gone (no deletion was seen: the watch was relisted)", ghost)


def _announce(
    body: kopf.Body,
    result: ReconcileResult,
    metrics: OperatorMetrics,
    labels: dict[str, str],
    logger: kopf.Logger,
) -> None:
    """Events, metrics and a log line for one reconcile."""
    for notice in result.notices:
        kopf.event(body, type=notice.type, reason=notice.reason, message=notice.message)
    if result.error is not None:
        if not isinstance(result.error, InvalidSpecError):
            logger.warning("reconcile failed: %s", result.error)
            metrics.reconcile_errors.labels(**labels).inc()
        return
    if result.report is not None and result.moved:
        metrics.rebalance_duration.labels(**labels).observe(result.report.duration_s)
        metrics.moved_shards.labels(**labels).inc(result.moved)
        logger.info("epoch %d: %d shards moved", result.epoch, result.moved)
    if result.unowned_removed:
        metrics.unowned_removed.labels(**labels).inc(result.unowned_removed)
    metrics.unassigned_shards.labels(**labels).set(result.unassigned)
    metrics.epoch.labels(**labels).set(result.epoch)
    metrics.pending.labels(**labels).set(result.pending)
    metrics.ack_pending.labels(**labels).set(result.ack_pending)


async def _sleep(
    wake: asyncio.Event, delay: float, stopped: kopf.DaemonStopped, *, debounce: float
) -> None:
    """Until woken (plus the debounce window), ``delay`` passes, or the daemon stops."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    while not stopped and (left := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(min(left, 1.0)):
                await wake.wait()
        except TimeoutError:
            continue
        if debounce:
            await asyncio.sleep(debounce)  # collect a burst of pod events into one reconcile
        return


@kopf.on.delete(*CR)
async def release(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    started: datetime,
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    try:
        desired = spec.parse(body)
    except InvalidSpecError:
        return  # never applied: nothing to release
    try:
        engine = await runtime.engine(desired, secrets=_kube(memo).get_secret)
        await engine.remove_group()
    except TransientError as e:
        waited = (datetime.now(UTC) - started.replace(tzinfo=started.tzinfo or UTC)).total_seconds()
        if not give_up_release(waited, runtime.settings.release_timeout_seconds):
            raise kopf.TemporaryError(str(e), delay=e.delay) from e
        # NATS or its Secret is gone for good (a namespace being deleted takes the
        # Secret with the CR): holding the finalizer would hold the namespace too.
        message = (
            f"gave up removing the consumers of group {desired.group} after {waited:.0f} s: "
            f"{e}; they stay on stream {desired.stream} (a new group on it fences them, "
            "or delete them with the nats CLI)"
        )
        kopf.warn(body, reason=crd.EVENT_CONSUMERS_LEFT, message=message)
        logger.warning(message)
    else:
        logger.info(
            "removed the consumers of group %s; stream %s kept", desired.group, desired.stream
        )
    runtime.forget(desired.namespace, desired.name)  # frees the stream for another CR
    runtime.metrics.forget(namespace=desired.namespace, name=desired.name)


def give_up_release(waited_s: float, limit_s: float) -> bool:
    """Whether deleting a CR stops retrying its consumers' removal (a negative limit: never)."""
    return limit_s >= 0 and waited_s >= limit_s


@kopf.on.update(*CR, field="spec")
def spec_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the CR's daemon at once (pins, grace period...); the daemon does the work."""
    runtime: Runtime = memo.runtime
    runtime.waker(namespace or "default", name).set()
