"""``coordshard worker`` runs the service's worker with every argument passed on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coordshard_operator.cli.worker import worker_argv
from coordshard_service.__main__ import settings_from


def test_coordshard_worker_execs_the_service_with_its_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coordshard_operator", "worker", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--pod-uid" in out.stdout and "COORDSHARD_" in out.stdout
    help_text = " ".join(out.stdout.split())
    assert "This incarnation's id (downward API ``metadata.uid``)" in help_text
    assert "Run on uvloop when it is installed" in help_text  # a flag's help too
    assert worker_argv(["--shards", "4"])[1:] == ["-m", "coordshard_service", "--shards", "4"]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDSHARD_POD_NAME", "from-env")
    monkeypatch.setenv("COORDSHARD_SHARDS", "32")
    settings = settings_from(["--shards", "8", "--no-http-enabled"])
    assert settings.pod_name == "from-env" and settings.shards == 8
    assert not settings.http_enabled
    assert settings.member_id.startswith("coordinate_from-env_")


def test_the_worker_runs_on_uvloop_unless_told_not_to() -> None:
    import uvloop

    from coordshard_service.__main__ import _loop_factory

    assert _loop_factory(settings_from([])) is uvloop.new_event_loop
    assert _loop_factory(settings_from(["--no-uvloop"])) is None


def test_a_database_url_that_is_no_url_exits_2_naming_the_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coordshard_service", "--database-url", "coordshard.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "invalid settings: database_url" in out.stderr and "Traceback" not in out.stderr


def test_a_store_url_sqlalchemy_cannot_read_is_an_error_that_hides_it() -> None:
    from coordshard_service.errors import StoreUnavailableError
    from coordshard_service.store import Store

    with pytest.raises(StoreUnavailableError, match="cannot read") as refused:
        Store("postgresql://user:secret@host:port/db")
    assert "secret" not in str(refused.value)


def test_main_turns_the_collector_back_on_however_it_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gc

    from coordshard_service.__main__ import main

    assert main(["--shards", "0"]) == 2  # invalid settings: the earliest way out
    assert "invalid settings" in capsys.readouterr().err
    assert gc.isenabled()
