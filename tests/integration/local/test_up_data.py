"""Where ``coordshard up`` keeps its data: the per-user data dir by default, kept
between runs; ``--throwaway`` keeps nothing."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

UP = ["up", "--workers", "1", "--shards", "4", "--load", "40", "--duration", "2"]
UP += ["--systems", "4", "--json"]


def _up(home: Path, *args: str) -> tuple[dict[str, Any], str]:
    """One ``up`` run with HOME and XDG_DATA_HOME under ``home``: its summary and stderr."""
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "xdg")}
    proc = subprocess.run(
        [sys.executable, "-m", "coordshard_operator", *UP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def _systems(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT count(*) FROM systems").fetchone()[0])


def test_up_keeps_its_data_in_the_per_user_dir_and_a_second_run_checks_its_own_commands(
    tmp_path: Path,
) -> None:
    data = tmp_path / "xdg" / "coordshard" / "coordinate" / "COORDINATE"
    first, err = _up(tmp_path)
    assert f"data in {data}" in err
    assert first["data_dir"] == str(data)
    assert (data / "store.db").is_file() and (data / "nats").is_dir()
    kept = _systems(data / "store.db")
    assert first["ok"] and first["points_checked"] > 0 and kept > 0

    # Same store, same nats-server data: the first run's systems stay, and the
    # second run's load has ids of its own, so its check has work to do.
    second, err = _up(tmp_path)
    assert f"data in {data}" in err
    assert second["ok"], second["problems"]
    assert second["succeeded"] > 0 and second["points_checked"] > 0, second
    assert not second["failed"].get("CoordinateConflictError"), second["failed"]
    assert _systems(data / "store.db") > kept

    # The store kept, nats-server's data gone (a fresh server): a new stream
    # instance, whose marks start afresh; the run is as clean.
    shutil.rmtree(data / "nats")
    third, err = _up(tmp_path)
    assert third["ok"] and third["succeeded"] > 0 and third["points_checked"] > 0, third
    logs = (data / "logs" / "worker-0.log").read_text()
    assert "is a new instance" in logs


def test_throwaway_runs_in_a_temp_dir_and_removes_it(tmp_path: Path) -> None:
    summary, err = _up(tmp_path, "--throwaway")
    line = next(x for x in err.splitlines() if "throwaway run in" in x)
    used = Path(line.split("throwaway run in ", 1)[1].split(" (", 1)[0])
    assert summary["ok"] and summary["data_dir"] is None
    assert not used.exists(), f"{used} left behind"
    assert not (tmp_path / "xdg").exists() and not (tmp_path / ".local").exists()


def test_another_shard_count_on_a_kept_dir_is_one_error_saying_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "xdg" / "coordshard" / "coordinate" / "COORDINATE"
    _up(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    again = [a if a != "4" else "8" for a in UP]  # --shards 8 (and --systems 8)
    proc = subprocess.run(
        [sys.executable, "-m", "coordshard_operator", *again],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "records 4 shards" in proc.stderr and "not 8" in proc.stderr, proc.stderr
    assert f"keeps its stream in {data / 'nats'}" in proc.stderr
    assert "--throwaway" in proc.stderr.splitlines()[-1]
