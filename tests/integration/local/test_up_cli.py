"""`coordshard up` as a user runs it: a subprocess, a JSON verdict, a clean exit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordshard_operator.local.natsserver import NatsServer

from ..conftest import streams_and_consumers

pytestmark = pytest.mark.integration


def test_up_with_load_and_chaos_prints_a_clean_json_summary(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordshard_operator",
            "up",
            "--workers",
            "2",
            "--shards",
            "8",
            "--load",
            "80",
            "--chaos",
            "3",
            "--restart-delay",
            "1",
            "--duration",
            "7",
            "--json",
            "--systems",
            "16",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    context = proc.stderr[-3000:] + _worker_logs(tmp_path)
    assert proc.returncode == 0, context
    summary = json.loads(proc.stdout)
    for key in (
        "published",
        "succeeded",
        "failed",
        "unknown",
        "lost",
        "duplicate_effects",
        "rebalances",
        "rebalance_ms",
        "throughput_per_s",
    ):
        assert key in summary
    assert summary["lost"] == 0 and summary["duplicate_effects"] == 0, context
    assert summary["kills"] >= 1 and summary["rebalances"] >= 3, (summary, context)
    assert summary["succeeded"] > 100
    assert set(summary["rebalance_ms"]) == {"p50", "p99", "max"}


def _worker_logs(data_dir: Path) -> str:
    """The end of every worker's log, for a failure message."""
    parts = []
    for log in sorted((data_dir / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-20:]
        parts.append(f"\n--- {log.name}\n" + "\n".join(tail))
    return "".join(parts)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workers", "0"], "must be >= 1"),
        (["--restart-in-place"], "needs --chaos"),
        (["--restart-in-place", "--chaos", "5", "--grace", "1"], "longer than --restart-delay"),
    ],
)
def test_up_refuses_nonsense_with_exit_2(args: list[str], says: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coordshard_operator", "up", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and says in proc.stderr


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose environment mentions ``text`` (our worker processes and nats-server)."""

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (
                text.encode() in (proc / "environ").read_bytes()
                or text.encode() in (proc / "cmdline").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_ctrl_c_stops_everything_and_leaves_no_process(tmp_path: Path) -> None:
    import signal

    data = str(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordshard_operator",
            "up",
            "--workers",
            "2",
            "--shards",
            "4",
            "--data-dir",
            data,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        # Wait for the first progress line: everything is up by then.
        for line in proc.stderr:
            if line.startswith("up "):
                break
        children = [p for p in _processes_mentioning(data) if p != proc.pid]
        assert len(children) >= 3, "two workers and a nats-server"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "nothing lost" in out
    assert [p for p in _processes_mentioning(data) if p != proc.pid] == []


def _start_up(data: str) -> tuple[subprocess.Popen[str], str]:
    """``up`` with two workers on ``data`` once its first progress line is out, and its
    stderr so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordshard_operator", "up", "--workers", "2", "--shards", "4",
         "--json", "--data-dir", data],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("up "):
            return proc, "".join(seen)
    raise AssertionError(f"up never started: {proc.wait(30)}")


def _workers_of(data: str) -> list[int]:
    return [
        p
        for p in _processes_mentioning(data)
        if b"coordshard_service" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def test_workers_stop_when_up_is_killed_and_the_next_up_stops_what_was_left(
    tmp_path: Path,
) -> None:
    import time

    data = str(tmp_path)
    first, _ = _start_up(data)
    workers = _workers_of(data)
    assert len(workers) == 2
    first.kill()  # kill -9: no cleanup runs in up itself
    first.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while _workers_of(data) and time.monotonic() < deadline:
        time.sleep(0.1)  # they are not our children: nothing to wait on
    assert _workers_of(data) == [], "workers outlived their supervisor"
    left = [p for p in _processes_mentioning(data) if p not in workers]
    assert left, "the embedded nats-server is what kill -9 leaves behind"

    second, err = _start_up(data)
    try:
        second.send_signal(__import__("signal").SIGINT)
        second.communicate(timeout=60)
    finally:
        second.kill()
    assert "left running by an earlier run" in err, err[-3000:]
    assert not [p for p in left if Path(f"/proc/{p}").exists()]


async def test_up_on_a_too_old_nats_server_says_so_and_creates_nothing(
    old_nats_server: NatsServer, tmp_path: Path
) -> None:
    args = [
        sys.executable, "-m", "coordshard_operator", "up", "--nats", old_nats_server.url,
        "--workers", "1", "--duration", "5", "--json", "--data-dir", str(tmp_path / "up"),
    ]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "coordshard up: error: nats-server 2.9." in proc.stderr
    assert "needs 2.14.0 or later" in proc.stderr and "Traceback" not in proc.stderr
    assert await streams_and_consumers(old_nats_server.url) == (0, 0)
