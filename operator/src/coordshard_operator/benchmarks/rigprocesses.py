"""The layouts rig with every member in its own process (``bench scale --member-processes``).

In ``layoutrig.Workers`` every member's pull loop shares the rig's one event
loop, so with a 100k backlog that process is saturated and a hand-off's
JetStream replies, and a new lane's first deliveries, queue behind thousands
of acks (docs/benchmarks.md, "Scale"). Here each member is a child process
(``python -m coordshard_operator.benchmarks.rigprocesses``) running the same
``Workers`` and ``Puller`` over its own connections; the rig keeps the engine,
the advisories and the clock. A child reports its deliveries to the rig in
batches on a core subject (time, shard), every ``REPORT_S``; a crash is a
SIGKILL, what a killed pod gets. ``time.monotonic`` is the system's monotonic
clock on Linux, the same in every process, so the rig's timings stay
comparable. The reports cost the rig a parse per delivery, far less than the
fetch and ack each cost it before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Iterable

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from coordshard_operator.benchmarks.layoutrig import Deliveries, Workers

__all__ = ["REPORT_S", "ProcessWorkers"]

REPORT_S = 0.01
"""How often a member process sends the deliveries it has seen, seconds."""
READY_TIMEOUT_S = 60.0
"""A member process must be connected and listening within this, seconds."""


class ProcessWorkers(Workers):
    """``Workers`` whose members are processes; the rig tells each which lanes to pull."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        url: str,
        stream: str,
        log: Deliveries,
        batch: int,
        fetch_s: float,
    ) -> None:
        super().__init__(nc, js, url=url, stream=stream, log=log, batch=batch, fetch_s=fetch_s)
        self.deliveries = log
        self.subject = f"rig.{uuid.uuid4().hex[:8]}"
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._bound: dict[str, set[str]] = {}
        self._subs: list[Subscription] = []

    async def _on_ready(self, msg: Msg) -> None:
        self._ready.setdefault(msg.subject.rsplit(".", 1)[-1], asyncio.Event()).set()

    async def _on_report(self, msg: Msg) -> None:
        report = json.loads(msg.data)
        member = report["m"]
        for now, shards in report["b"]:
            for shard in shards:
                self.deliveries.record_shard(now, member, shard)

    async def prepare(self, members: Iterable[str]) -> None:
        """Start every member's process at once and wait until each listens."""
        if not self._subs:
            self._subs = [
                await self.nc.subscribe(f"{self.subject}.ready.*", cb=self._on_ready),
                await self.nc.subscribe(f"{self.subject}.report", cb=self._on_report),
            ]
        fresh = [m for m in members if m not in self.procs]
        for m in fresh:
            self._ready.setdefault(m, asyncio.Event())
            self.procs[m] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, "--url", self.url, "--stream", self.stream,
                "--member", m, "--batch", str(self.batch), "--fetch-s", str(self.fetch_s),
                "--subject", self.subject, "--shard-token", str(self.deliveries.shard_token),
            )  # fmt: skip
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*(self._ready[m].wait() for m in fresh))

    async def start(self, member: str, consumer: str) -> None:
        if consumer in self._bound.setdefault(member, set()):
            return
        if member not in self.procs:
            await self.prepare([member])
        self._bound[member].add(consumer)
        await self.nc.request(f"{self.subject}.bind.{member}", consumer.encode(), timeout=30)

    async def crash(self, member: str) -> None:
        proc = self.procs.pop(member)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs = []
        for m in list(self.procs):
            await self.crash(m)
        await super().stop()


class _Reporter:
    """A member process's delivery sink: (time, shard) batched to the rig every REPORT_S."""

    def __init__(self, nc: Client, subject: str, member: str, shard_token: int) -> None:
        self.nc, self.subject, self.member, self.shard_token = nc, subject, member, shard_token
        self._batch: dict[float, list[int]] = {}

    def record(self, now: float, member: str, subject: str) -> None:
        self._batch.setdefault(now, []).append(int(subject.split(".")[self.shard_token]))

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)  # a reporting period, not synchronisation
            if self._batch:
                batch, self._batch = self._batch, {}
                body = {"m": self.member, "b": list(batch.items())}
                await self.nc.publish(f"{self.subject}.report", json.dumps(body).encode())


async def _member(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.url)
    reporter = _Reporter(nc, args.subject, args.member, args.shard_token)
    workers = Workers(nc, nc.jetstream(), url=args.url, stream=args.stream, log=reporter,
                      batch=args.batch, fetch_s=args.fetch_s)  # fmt: skip

    async def bind(msg: Msg) -> None:
        await workers.start(args.member, msg.data.decode())
        await msg.respond(b"ok")

    await nc.subscribe(f"{args.subject}.bind.{args.member}", cb=bind)
    await nc.publish(f"{args.subject}.ready.{args.member}", b"")
    await nc.flush()
    await reporter.flush_forever()


def main() -> None:
    p = argparse.ArgumentParser(description="one member of the layouts rig (killed, not stopped)")
    p.add_argument("--url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--member", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--fetch-s", type=float, required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--shard-token", type=int, required=True)
    asyncio.run(_member(p.parse_args()))


if __name__ == "__main__":
    main()
