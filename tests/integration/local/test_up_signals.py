"""SIGTERM stops ``coordshard up`` within a bound, whatever state its workers are in.

Issue 17: with its workers wedged, ``up`` ignored SIGTERM and had to be killed.
SIGTERM then ran the Ctrl-C path (converge, check the store), and with no
worker able to serve, converging waited its full minute before anything was
stopped. SIGTERM means "stop now": the workers get SIGTERM, then SIGKILL after
a grace, the nats-server is stopped, nothing is checked, and the exit code is
128 + 15.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import process_stopped
from .test_up_cli import _processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXIT_BOUND_S = 15.0
"""How long ``up`` may take to exit after SIGTERM: the workers' stop grace, the
nats-server's stop, and slack for a loaded machine."""


def _wait(check: object, *, timeout: float, what: str) -> None:
    """Poll a condition on processes that are not our children (nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _bound(data: Path, workers: int) -> bool:
    logs = sorted((data / "logs").glob("worker-*.log"))
    return len(logs) == workers and all("bound to consumer" in p.read_text() for p in logs)


def _pids(data: Path, pattern: str) -> list[int]:
    return [int(p.read_text()) for p in sorted((data / "run").glob(pattern))]


def test_sigterm_stops_up_within_a_bound_while_its_workers_are_frozen(tmp_path: Path) -> None:
    data = tmp_path / "up"
    err = tmp_path / "up.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordshard_operator", "up", "--workers", "2",
             "--shards", "4", "--json", "--data-dir", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )  # fmt: skip
    started: list[int] = []
    try:
        _wait(lambda: _bound(data, 2), timeout=60, what="both workers bound")
        started = [p for p in _processes_mentioning(str(data)) if p != proc.pid]
        workers = _pids(data, "worker-*.pid")
        assert len(workers) == 2
        for pid in workers:  # wedged: alive, connected, answering nothing
            os.kill(pid, signal.SIGSTOP)
        _wait(lambda: all(process_stopped(p) for p in workers), timeout=5, what="SIGSTOP")
        # The group is wedged once up has taken both out (not ready: grace 0).
        _wait(
            lambda: all(f"reason='lost worker-{i}'" in err.read_text() for i in (0, 1)),
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
        assert [p for p in started if Path(f"/proc/{p}").exists()] == [], "left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in started:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
