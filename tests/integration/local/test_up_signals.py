"""SIGTERM stops ``coordshard up`` within a bound, whatever state its workers are in.

Issue 17: with its workers wedged, ``up`` ignored SIGTERM and had to be killed.
SIGTERM then ran the Ctrl-C path (converge, check the store), and with no
worker able to serve, converging waited its full minute before anything was
stopped. SIGTERM means "stop now": the workers get SIGTERM, then SIGKILL after
a grace, the nats-server is stopped, nothing is checked, and the exit code is
128 + 15.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from coordshard_client import command_subject
from coordshard_client.naming import DEFAULT_STREAM

from ..conftest import process_stopped, sqlite_write_lock
from .test_up_cli import _processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXIT_BOUND_S = 15.0
"""How long ``up`` may take to exit after SIGTERM: the workers' stop grace, the
nats-server's stop, and slack for a loaded machine."""
STOP_GRACE_S = 1.0
KILLED_BOUND_S = 8.0
"""With ``--stop-grace 1``: well below the 10 s a worker's own default grace would take."""


def _wait(check: object, *, timeout: float, what: str) -> None:
    """Poll a condition on processes that are not our children (nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _bound(data: Path, workers: int) -> bool:
    logs = sorted((data / "logs").glob("worker-*.log"))
    return len(logs) == workers and all("bound to consumer" in p.read_text() for p in logs)


def _wait_bound(proc: subprocess.Popen[bytes], data: Path, err: Path) -> None:
    """Until both workers are bound; up exiting meanwhile fails at once, with its stderr."""
    _wait(lambda: _bound(data, 2) or proc.poll() is not None, timeout=60, what="workers bound")
    assert proc.poll() is None, err.read_text()[-3000:]


def _lost(err: Path) -> set[str]:
    """The workers up has taken out so far (its "rebalanced ... reason='lost a, b'" lines)."""
    found = re.findall(r"reason='(?:[^']*; )?lost ([^';]+)", err.read_text())
    return {name for names in found for name in names.split(", ")}


def _pids(data: Path, pattern: str) -> list[int]:
    return [int(p.read_text()) for p in sorted((data / "run").glob(pattern))]


def _start_up(data: Path, err: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``up`` with two workers and four shards, its stderr into ``err``."""
    with err.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "coordshard_operator", "up", "--workers", "2",
             "--shards", "4", "--json", "--data-dir", str(data), *extra],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )  # fmt: skip


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def _clean_up(proc: subprocess.Popen[bytes], started: list[int]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for pid in _alive(started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_up_within_a_bound_while_its_workers_are_frozen(tmp_path: Path) -> None:
    data = tmp_path / "up"
    err = tmp_path / "up.err"
    proc = _start_up(data, err)
    started: list[int] = []
    try:
        _wait_bound(proc, data, err)
        started = [p for p in _processes_mentioning(str(data)) if p != proc.pid]
        workers = _pids(data, "worker-*.pid")
        assert len(workers) == 2
        for pid in workers:  # wedged: alive, connected, answering nothing
            os.kill(pid, signal.SIGSTOP)
        _wait(lambda: all(process_stopped(p) for p in workers), timeout=5, what="SIGSTOP")
        # The group is wedged once up has taken both out (not ready: grace 0).
        _wait(
            lambda: _lost(err) >= {"worker-0", "worker-1"},
            timeout=30,
            what="up to take the frozen workers out",
        )

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"up still running {EXIT_BOUND_S} s after SIGTERM; its stderr:\n"
                + err.read_text()[-3000:]
            ) from None
        took = time.monotonic() - sent
        assert code == 128 + signal.SIGTERM, (code, err.read_text()[-3000:])
        assert "Traceback" not in err.read_text(), err.read_text()[-3000:]
        assert "terminated by SIGTERM" in err.read_text()
        print(f"up exited {took:.1f} s after SIGTERM")
        assert _alive(started) == [], "left behind"
    finally:
        _clean_up(proc, started)


async def _ack_pending(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return sum(
            c.num_ack_pending or 0 for c in await nc.jetstream().consumers_info(DEFAULT_STREAM)
        )
    finally:
        await nc.close()


async def test_sigterm_kills_a_worker_wedged_in_the_store_after_the_grace(tmp_path: Path) -> None:
    """A worker whose batch waits for the store's write lock does not stop on SIGTERM
    (it finishes the batch in hand first, and SQLite makes it wait up to 30 s): ``up``
    kills it after the grace instead of waiting for it."""
    data = tmp_path / "up"
    err = tmp_path / "up.err"
    proc = _start_up(data, err, "--stop-grace", str(STOP_GRACE_S))
    started: list[int] = []
    try:
        await asyncio.to_thread(_wait_bound, proc, data, err)
        started = [p for p in _processes_mentioning(str(data)) if p != proc.pid]
        conf = (data / "nats" / "coordshard.conf").read_text()
        port = re.search(r'listen: "127\.0\.0\.1:(\d+)"', conf)
        assert port is not None, conf
        url = f"nats://127.0.0.1:{port[1]}"
        async with sqlite_write_lock(data / "store.db"):
            nc = await nats.connect(url)
            try:
                get = {"v": 1, "command": {"op": "get-system", "system_id": "s"}}
                subject = command_subject(system_id="s", op="get-system", shards=4)
                await nc.jetstream().publish(str(subject), json.dumps(get).encode())
            finally:
                await nc.close()
            deadline = time.monotonic() + 10
            while not await _ack_pending(url):  # delivered: its worker waits for the lock
                assert time.monotonic() < deadline, "the command was never delivered"
                await asyncio.sleep(0.05)

            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(proc.wait, EXIT_BOUND_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"up still running {EXIT_BOUND_S} s after SIGTERM; its stderr:\n"
                    + err.read_text()[-3000:]
                ) from None
            took = time.monotonic() - sent
        text = err.read_text()
        assert code == 128 + signal.SIGTERM, (code, text[-3000:])
        assert "exited with -9" in text, text[-3000:]  # killed after the grace
        assert took < KILLED_BOUND_S, f"{took:.1f} s: was it given --stop-grace {STOP_GRACE_S}?"
        print(f"up exited {took:.1f} s after SIGTERM, the wedged worker killed")
        assert _alive(started) == [], "left behind"
    finally:
        _clean_up(proc, started)
