"""``coordshard up``: the whole system on one machine, and its unattended verdict.

Starts an embedded nats-server (or uses ``--nats``), the command stream, N
worker processes sharing one store, and the local rebalancer; optionally drives
load through the SDK and kills a random worker every ``--chaos`` seconds
(restarting it after ``--restart-delay``, as Kubernetes would: as a new pod, or
with ``--restart-in-place`` as a container restarted in its pod). While it runs a
live view shows who owns what; ``--duration S --json`` runs unattended and
prints one JSON summary. The exit code is 1 if the independent check finds a
lost or twice-applied command.

Ctrl-C (SIGINT) stops the load and checks the store before exiting; a second
Ctrl-C, or SIGTERM at any time, stops everything at once and checks nothing:
each worker gets SIGTERM, then SIGKILL after ``--stop-grace``, the embedded nats-server
is stopped, and the exit code is 128 + the signal's number (143 for SIGTERM).
Nothing a wedged worker does can hold that up.

The data (nats-server's JetStream store, the SQLite store, logs, pid files) is
kept between runs: in ``--data-dir``, or by default in the per-user data
directory (``local.datadir``), printed at start. ``--throwaway`` runs in a
temporary directory deleted at exit. Each run's load uses system ids of its
own, so a run on a kept store checks its own commands, not an earlier run's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from coordshard_client.naming import DEFAULT_GROUP, DEFAULT_STREAM
from coordshard_client.tasks import cancel_and_wait
from coordshard_operator.local.datadir import default_data_dir
from coordshard_operator.local.load import Ledger, LoadGenerator
from coordshard_operator.local.membership import is_member
from coordshard_operator.local.quantiles import percentile
from coordshard_operator.local.system import LocalSystem, SystemOptions
from coordshard_operator.local.view import Snapshot, WorkerRow, render
from coordshard_operator.local.workers import WorkerProcess
from coordshard_operator.rebalancer.errors import NatsServerTooOldError, StreamMismatchError

__all__ = ["TerminatedError", "UpOptions", "add_parser", "run_up"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TerminatedError(Exception):
    """``up`` was told to stop at once (SIGTERM, or a second SIGINT): everything was
    stopped and nothing checked. ``signum``: that signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


class _Signals:
    """SIGINT once: stop and check (``interrupted``); SIGTERM, or SIGINT again: stop
    now (``terminated``, with the signal in ``signum``)."""

    def __init__(self) -> None:
        self.interrupted = asyncio.Event()
        self.terminated = asyncio.Event()
        self.signum = 0

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGINT and not self.interrupted.is_set():
            sys.stderr.write(
                "coordshard up: stopping (Ctrl-C again, or SIGTERM, to stop without the check)\n"
            )
        elif not self.terminated.is_set():
            self.signum = signum
            self.terminated.set()
        self.interrupted.set()

    async def unless_terminated(self, work: Awaitable[T]) -> T:
        """``work``'s result, or TerminatedError once ``terminated`` is set (``work`` is
        cancelled and awaited first)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self.terminated.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            await cancel_and_wait(task)
            raise TerminatedError(self.signum)
        return task.result()


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``coordshard up`` does on top of a local system; units in ``add_parser``."""

    system: SystemOptions = field(default_factory=SystemOptions)
    load: float = 0.0
    chaos_s: float = 0.0
    restart_delay_s: float = 2.0
    restart_in_place: bool = False
    duration_s: float = 0.0
    json: bool = False
    data_dir: Path | None = None
    """None: the per-user default (``datadir.default_data_dir``)."""
    throwaway: bool = False
    """Run in a temporary directory deleted at exit (``data_dir`` must be None)."""
    view: bool = True


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="run the whole system locally: nats-server, workers, rebalancer, load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--shards", type=int, default=16, help="shard count N (default 16)")
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        metavar="RATE",
        help="commands per second through the SDK (default 0: no load)",
    )
    p.add_argument(
        "--chaos",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="kill -9 a random worker this often (default 0: never)",
    )
    p.add_argument(
        "--restart-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="restart a killed worker after this long (default 2)",
    )
    p.add_argument(
        "--restart-in-place",
        action="store_true",
        help="chaos restarts a killed worker in place (same pod UID and consumer, as a "
        "kubelet restarts a crashed container); needs --grace longer than --restart-delay",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long a dead or unready worker keeps its shards (default 0)",
    )
    p.add_argument(
        "--stop-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="when stopping, how long a worker gets after SIGTERM before SIGKILL (default 5)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop after this long (default 0: until Ctrl-C)",
    )
    p.add_argument(
        "--json", action="store_true", help="no live view; print one JSON summary at the end"
    )
    p.add_argument(
        "--nats", metavar="URL", help="use this NATS server or cluster (comma-separated)"
    )
    p.add_argument(
        "--cluster",
        type=int,
        choices=[1, 3],
        default=1,
        help="embedded nats-server nodes: 1, or 3 with an R3 stream (default 1)",
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL of the shared store (default: SQLite in the data dir)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep nats-server data, the store and logs here (default: the per-user data "
        f"dir, {default_data_dir(group=DEFAULT_GROUP, stream=DEFAULT_STREAM)})",
    )
    where.add_argument(
        "--throwaway",
        action="store_true",
        help="keep nothing: run in a temporary directory deleted at exit",
    )
    p.add_argument(
        "--systems", type=int, default=64, help="coordinate systems the load uses (default 64)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed for load and chaos (default 1)")
    p.set_defaults(run=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.shards < 1:
        sys.stderr.write("coordshard up: error: --workers and --shards must be >= 1\n")
        return 2
    if args.stop_grace < 0:
        sys.stderr.write("coordshard up: error: --stop-grace must be >= 0\n")
        return 2
    if args.restart_in_place and not (args.chaos > 0 and args.grace > args.restart_delay):
        sys.stderr.write(
            "coordshard up: error: --restart-in-place needs --chaos and a --grace longer "
            "than --restart-delay (else the killed worker's shards move before it is back)\n"
        )
        return 2
    options = UpOptions(
        system=SystemOptions(
            workers=args.workers,
            shards=args.shards,
            grace_s=args.grace,
            nats_url=args.nats,
            cluster=args.cluster,
            database_url=args.db,
            systems=args.systems,
            seed=args.seed,
            stop_grace_s=args.stop_grace,
        ),
        load=args.load,
        chaos_s=args.chaos,
        restart_delay_s=args.restart_delay,
        restart_in_place=args.restart_in_place,
        duration_s=args.duration,
        json=args.json,
        data_dir=args.data_dir,
        throwaway=args.throwaway,
        view=not args.json and sys.stdout.isatty(),
    )
    logging.basicConfig(
        # --json: the summary alone on stdout, INFO logs on stderr as without it.
        level=logging.WARNING if options.view else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        summary = asyncio.run(run_up(options))
    except KeyboardInterrupt:
        return 130
    except TerminatedError as e:
        sys.stderr.write(f"coordshard up: {e}: workers and nats-server stopped, nothing checked\n")
        return 128 + e.signum
    except (NatsServerTooOldError, StreamMismatchError) as e:
        # What no retry fixes: say it in one line, not a traceback (nothing was created).
        sys.stderr.write(f"coordshard up: error: {e}\n")
        if isinstance(e, StreamMismatchError) and options.system.nats_url is None:
            sys.stderr.write(_kept_stream_hint(options) + "\n")
        return 1
    if options.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(_summary_text(summary) + "\n")
    return 0 if summary["ok"] else 1


def _kept_stream_hint(options: UpOptions) -> str:
    """What to do when the embedded server's kept stream is not the one asked for (most
    often: the same data dir run again with another ``--shards``)."""
    data_dir = options.data_dir or default_data_dir(group=DEFAULT_GROUP, stream=DEFAULT_STREAM)
    return (
        f"coordshard up: the embedded nats-server keeps its stream in {data_dir / 'nats'}:"
        " run with another --data-dir, or --throwaway, or remove that folder to start afresh"
    )


async def run_up(options: UpOptions) -> dict[str, Any]:
    """Run local mode until the duration ends or SIGINT; return the summary.

    Raises:
        TerminatedError: SIGTERM, or a second SIGINT; everything was stopped, nothing
            checked.
    """
    if options.throwaway:
        data_dir = Path(tempfile.mkdtemp(prefix="coordshard-up-"))
        sys.stderr.write(f"coordshard up: throwaway run in {data_dir} (deleted at exit)\n")
    else:
        data_dir = options.data_dir or default_data_dir(group=DEFAULT_GROUP, stream=DEFAULT_STREAM)
        sys.stderr.write(
            f"coordshard up: data in {data_dir} (kept; --throwaway for a run that keeps nothing)\n"
        )
    signals = _Signals()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.on_signal, sig)
    system = LocalSystem(options.system, data_dir)
    try:
        # Starting and serving can be cut short; closing cannot, and it is bounded
        # (LocalSystem.close), so a terminated run still leaves no process behind.
        try:
            await signals.unless_terminated(system.start())
            summary = await signals.unless_terminated(_serve(system, options, signals.interrupted))
        finally:
            await system.close()
        summary["data_dir"] = None if options.throwaway else str(data_dir)
        return summary
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if options.throwaway:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _serve(
    system: LocalSystem, options: UpOptions, interrupted: asyncio.Event
) -> dict[str, Any]:
    """Load, chaos and the view until the duration ends or SIGINT; then the check."""
    generator = system.start_load(rate=options.load) if options.load > 0 else None
    side: list[asyncio.Task[None]] = []
    if options.chaos_s > 0:
        side.append(asyncio.create_task(_chaos(system, options, interrupted)))
    if options.view:
        side.append(asyncio.create_task(_view(system, generator, interrupted)))
    else:
        every = 10.0 if options.json else 5.0
        side.append(asyncio.create_task(_progress(system, generator, interrupted, every)))
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.duration_s or None):
                await interrupted.wait()
    finally:
        await cancel_and_wait(*side)
    sys.stderr.write("stopping load, restarting dead workers, checking the store...\n")
    return await system.finish()


async def _chaos(system: LocalSystem, options: UpOptions, stop: asyncio.Event) -> None:
    """kill -9 a random running worker every ``chaos_s``; restart it after a delay."""
    rng = random.Random(options.system.seed)
    restarts: list[asyncio.Task[None]] = []

    async def restart(w: WorkerProcess) -> None:
        await asyncio.sleep(options.restart_delay_s)  # the "kubelet" back-off, by design
        await w.start(in_place=options.restart_in_place)

    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.chaos_s):
                    await stop.wait()
            if stop.is_set():
                return
            running = sorted(
                (w for w in system.workers.values() if w.running), key=lambda w: w.name
            )
            if len(running) < 2:
                continue  # keep at least one worker alive
            victim = rng.choice(running)
            logger.info("chaos: kill -9 %s pid=%s", victim.name, victim.pid)
            system.kill(victim.name)
            restarts.append(asyncio.create_task(restart(victim)))
    finally:
        for t in restarts:
            t.cancel()


def _snapshot(system: LocalSystem, generator: LoadGenerator | None) -> Snapshot:
    group = system.group
    assert group is not None
    started = system.started
    now = time.monotonic()
    led = generator.ledger if generator else Ledger()
    window = [lat for end, lat in led.recent if now - end <= 5.0]
    ordered = sorted(window)
    rows = []
    for w in group.workers.values():
        st = w.state
        if not w.running:
            label = "dead"
        elif not st.was_ready:
            label = "starting"
        elif not st.ready:
            label = "not-ready"
        else:
            label = "ready"
        if label != "dead" and not is_member(st, now=now, grace=group.grace):
            label = label if label != "ready" else "joining"
        rows.append(WorkerRow(w.name, w.pid, label, group.assignment.get(w.member_id, ())))
    return Snapshot(
        elapsed_s=now - started,
        workers=rows,
        unassigned=group.shards - sum(len(s) for s in group.assignment.values()),
        rate_per_s=len(window) / 5.0,
        p50_ms=percentile(ordered, 0.5),
        p99_ms=percentile(ordered, 0.99),
        in_flight=led.in_flight,
        published=led.published,
        succeeded=led.succeeded,
        failed=sum(led.failed.values()),
        unknown=led.unknown,
        stale_reads=led.stale_reads,
        rebalances=group.rebalances,
        epoch=group.epoch,
    )


async def _view(system: LocalSystem, generator: LoadGenerator | None, stop: asyncio.Event) -> None:
    while not stop.is_set():
        screen = render(_snapshot(system, generator))
        sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n\n(Ctrl-C to stop)\n")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


async def _progress(
    system: LocalSystem, generator: LoadGenerator | None, stop: asyncio.Event, every: float
) -> None:
    """Without a terminal: one progress line on stderr every few seconds."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()
        s = _snapshot(system, generator)
        group = system.group
        assert group is not None
        sys.stderr.write(
            f"up {s.elapsed_s:5.0f}s epoch={s.epoch} live={len(group.live)} "
            f"rate={s.rate_per_s:.0f}/s p99={s.p99_ms:.0f}ms ok={s.succeeded} "
            f"unknown={s.unknown} rebalances={len(s.rebalances)}\n"
        )


def _or_dash(value: float | None) -> str:
    """A percentile of the summary, "-" where there were too few samples to give one."""
    return "-" if value is None else str(value)


def _summary_text(summary: dict[str, Any]) -> str:
    verdict = "OK: nothing lost, nothing applied twice" if summary["ok"] else "FAILED"
    lines = [
        "",
        f"coordshard up: {verdict}",
        f"  {summary['workers']} workers, {summary['shards']} shards, "
        f"{summary['duration_s']} s, {summary['kills']} kills, "
        f"{summary['rebalances']} rebalances",
        f"  commands: {summary['published']} published, {summary['succeeded']} succeeded, "
        f"{sum(summary['failed'].values())} refused"
        + "".join(f" ({name} {n})" for name, n in summary["failed"].items())
        + ", "
        f"{summary['unknown']} unknown",
        f"  throughput {summary['throughput_per_s']}/s, latency p50 "
        f"{summary['latency_ms']['p50']} ms, p99 {_or_dash(summary['latency_ms']['p99'])} ms",
        f"  rebalance ms p50 {summary['rebalance_ms']['p50']}, p99 "
        f"{_or_dash(summary['rebalance_ms']['p99'])}, max {summary['rebalance_ms']['max']}",
        f"  check: {summary['points_checked']} points, lost {summary['lost']}, "
        f"duplicate effects {summary['duplicate_effects']}, stale reads {summary['stale_reads']}",
    ]
    if summary.get("data_dir"):
        lines.append(f"  data kept in {summary['data_dir']}")
    lines += [f"  ! {p}" for p in summary["problems"]]
    return "\n".join(lines)
