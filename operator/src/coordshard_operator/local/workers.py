"""Worker processes for local mode: start, probe, kill, restart.

Each worker is ``python -m coordshard_service`` with its configuration in
``COORDSHARD_*`` variables, exactly as a pod gets it from its manifest and the
downward API. A restart is a new *incarnation* (a fresh id, so a fresh
consumer), as a restarted pod gets a new UID; ``start(in_place=True)`` is a
container restarted inside its pod instead (same UID, same consumer). Readiness is read from the
worker's own ``/readyz``, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from coordshard_client.naming import member_id
from coordshard_client.tasks import cancel_and_wait
from coordshard_operator.local.membership import WorkerState
from coordshard_operator.local.natsserver import free_port

__all__ = ["WorkerProcess", "WorkerSpec", "pid_file", "stop_leftovers"]

logger = logging.getLogger(__name__)


CRASH_BACKOFF_MAX_S = 30.0
"""Longest wait before restarting a worker that keeps crashing."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of a local group shares."""

    nats_url: str
    database_url: str
    group: str
    stream: str
    prefix: str
    shards: int
    log_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)


class WorkerProcess:
    """One named worker slot; each ``start()`` is a new incarnation."""

    def __init__(
        self,
        name: str,
        spec: WorkerSpec,
        *,
        wake: asyncio.Event,
        restart_crashed_s: float | None = None,
    ) -> None:
        self.name = name
        self.restart_crashed_s = restart_crashed_s
        """Restart an incarnation that exits by itself after this many seconds, doubling per
        crash in a row up to ``CRASH_BACKOFF_MAX_S`` (a kubelet's back-off); None: never."""
        self.crashes = 0
        """Crashes in a row (reset when an incarnation turns ready)."""
        self._stopping = False
        self._killed: asyncio.subprocess.Process | None = None
        """The incarnation we sent kill -9 (chaos restarts its victims itself)."""
        self._restart: asyncio.Task[None] | None = None
        self.spec = spec
        self.generation = 0
        self.restarts = 0
        """Restarts in place (same incarnation), as a pod's container restartCount."""
        self.incarnation = ""
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.state = WorkerState(member_id="")
        self.wake = wake
        """Set whenever the state changes; the rebalancer clears it after reading."""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def member_id(self) -> str:
        """The member id of the running incarnation ("" before the first start)."""
        return self.state.member_id

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _set(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            self.wake.set()

    async def start(self, *, in_place: bool = False) -> None:
        """Start a new incarnation of this worker, or with ``in_place`` the same one again.

        In place is a container restarted inside its pod: same pod UID, so the same
        consumer, and still a member (held, not ready) until its grace runs out.
        """
        self._stopping = False
        previous = self.state
        in_place = in_place and bool(self.incarnation)
        if in_place:
            self.restarts += 1
        else:
            self.generation += 1
            self.incarnation = f"{self.generation}-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        s = self.spec
        env = {
            **os.environ,
            "COORDSHARD_NATS_URL": s.nats_url,
            "COORDSHARD_DATABASE_URL": s.database_url,
            "COORDSHARD_GROUP": s.group,
            "COORDSHARD_STREAM": s.stream,
            "COORDSHARD_PREFIX": s.prefix,
            "COORDSHARD_SHARDS": str(s.shards),
            "COORDSHARD_POD_NAME": self.name,
            "COORDSHARD_POD_UID": self.incarnation,
            "COORDSHARD_HTTP_HOST": "127.0.0.1",
            "COORDSHARD_HTTP_PORT": str(self.port),
            # The worker stops by itself if we die (kill -9 of ``up``), as a pod's
            # containers do not outlive their pod.
            "COORDSHARD_PARENT_PID": str(os.getpid()),
            **s.extra_env,
        }
        s.log_dir.mkdir(parents=True, exist_ok=True)
        log = s.log_dir / f"{self.name}.log"
        with log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "coordshard_service",
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file(s.log_dir, self.name).write_text(f"{self.process.pid}\n")
        mid = member_id(group=s.group, member=self.name, incarnation=self.incarnation)
        if in_place:
            down = previous.exited_at or previous.not_ready_since or time.monotonic()
            self._set(
                WorkerState(member_id=mid, was_ready=previous.was_ready, not_ready_since=down)
            )
        else:
            self._set(WorkerState(member_id=mid))
        logger.info("started worker %s pid=%s member id=%s", self.name, self.pid, mid)
        self._tasks = [
            asyncio.create_task(self._watch_exit(self.process)),
            asyncio.create_task(self._probe(self.process, self.port)),
        ]

    async def _watch_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if process is self.process:
            if self._stopping or self._killed is process:  # our stop, or our kill -9
                logger.info("worker %s pid=%s exited with %s", self.name, process.pid, code)
            else:
                # Any exit we did not cause (a crash, the OOM killer, a user's kill -9,
                # even a clean exit) is restarted, as a kubelet restarts a container.
                log = self.spec.log_dir / f"{self.name}.log"
                logger.warning(
                    "worker %s pid=%s exited with %s; the end of %s:\n%s",
                    self.name,
                    process.pid,
                    code,
                    log,
                    _tail(log),
                )
                if self.restart_crashed_s is not None and not self._stopping:
                    delay = min(CRASH_BACKOFF_MAX_S, self.restart_crashed_s * 2**self.crashes)
                    self.crashes += 1
                    logger.warning("restarting worker %s in %.1f s", self.name, delay)
                    self._restart = asyncio.create_task(self._restart_after(delay, process))
            self._set(
                WorkerState(
                    member_id=self.state.member_id,
                    exited_at=time.monotonic(),
                    was_ready=self.state.was_ready,
                )
            )

    async def _restart_after(self, delay: float, crashed: asyncio.subprocess.Process) -> None:
        await asyncio.sleep(delay)  # the back-off itself, by design
        if self.process is crashed and not self._stopping:  # nobody restarted it meanwhile
            await self.start()

    async def _probe(self, process: asyncio.subprocess.Process, port: int) -> None:
        """Poll /readyz every 100 ms, as a kubelet readiness probe does."""
        url = f"http://127.0.0.1:{port}/readyz"
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while process.returncode is None:
                try:
                    async with session.get(url) as resp:
                        ready = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ready = False
                if process is not self.process or process.returncode is not None:
                    return
                st = self.state
                if ready:
                    self.crashes = 0
                    self._set(WorkerState(member_id=st.member_id, ready=True, was_ready=True))
                elif st.ready or (st.was_ready and st.not_ready_since is None):
                    self._set(
                        WorkerState(
                            member_id=st.member_id,
                            was_ready=st.was_ready,
                            not_ready_since=time.monotonic(),
                        )
                    )
                await asyncio.sleep(0.1)  # the probe period

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT, ...) to the running incarnation."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """kill -9, as a crash does (not restarted by the crash rule: the caller does)."""
        self._killed = self.process
        self.signal(signal.SIGKILL)

    async def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM (SIGCONT first, in case it is stopped), then SIGKILL after ``grace``."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                self.kill()
                await process.wait()
        await cancel_and_wait(*self._tasks)


def pid_file(log_dir: Path, name: str) -> Path:
    """Where a worker's pid is kept, so a later ``up`` on the same data dir finds it."""
    run = log_dir.parent / "run"
    run.mkdir(parents=True, exist_ok=True)
    return run / f"{name}.pid"


def stop_leftovers(log_dir: Path, *, grace: float = 10.0) -> list[tuple[str, int]]:
    """Stop the processes an earlier ``up`` on this data dir left running (it was killed
    with -9: its nats-server, and workers frozen or too old to watch their parent);
    return (name, pid) of each one stopped.

    A pid counts only while it is still a worker or a nats-server (its command line
    says so): pids are reused.
    """
    stopped = []
    run = log_dir.parent / "run"
    for path in sorted(run.glob("*.pid")) if run.is_dir() else []:
        try:
            pid = int(path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            alive = b"coordshard_service" in cmdline or b"nats-server" in cmdline
        except (OSError, ValueError):
            alive = False
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                if _zombie(pid):
                    break
                time.sleep(0.05)  # not our child: nothing to wait on but its /proc entry
            if Path(f"/proc/{pid}").exists() and not _zombie(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stopped.append((path.stem, pid))
        path.unlink(missing_ok=True)
    return stopped


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(unreadable: {e})"
