"""Each install extra on its own, in a fresh virtualenv, runs its entry points.

The suite's own venv has every extra, so an import that only one extra
brings (``yaml``, ``kopf``, ``nkeys``) can hide there. Here the wheel is
built once, then installed bare (the SDK), with ``[service]`` and with
``[operator]``, each into a new venv, and the ``coordshard`` command must
work for what that extra is for and say which extra to install for the
rest. The service venv also starts a real worker that logs in to a real
nats-server with an nkey seed. pip asks the package index once, for a
wheelhouse (its cache makes later runs quicker); the whole module takes
about a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from coordshard_operator.local.natsserver import free_port, start_server
from coordshard_operator.testing.cluster import wait_until
from coordshard_operator.testing.users import authorization, new_user_seed

from .conftest import missing_service

pytestmark = [pytest.mark.integration, pytest.mark.install]

ROOT = Path(__file__).parents[2]
MISSING_EXTRA = 3  # coordshard_operator.cli.main.EXIT_MISSING_EXTRA

Venv = Callable[[str], Path]
"""extras ("" for none) -> the venv's bin directory"""


def _run(*cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coordshard's wheel and the wheels of every extra's dependencies, fetched once.

    The venvs then install from here alone (``--no-index``): each still gets
    only what its extra declares, without asking the index three times.
    """
    house = tmp_path_factory.mktemp("wheels")
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "-w",
        house,
        f"{ROOT}[service,operator]",
        timeout=300,
    )
    if built.returncode != 0:
        if "Could not find a version" in built.stderr or "onnection" in built.stderr:
            missing_service("no package index reachable", how=built.stderr[-500:])
        pytest.fail(f"pip wheel failed:\n{built.stderr}")
    return house


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Venv:
    """A fresh venv with coordshard and only ``extras``; pip is the suite's own (``--python``)."""

    def make(extras: str) -> Path:
        where = tmp_path_factory.mktemp(f"venv-{extras or 'sdk'}")
        made = _run(sys.executable, "-m", "venv", "--without-pip", where)
        assert made.returncode == 0, made.stderr
        spec = f"coordshard[{extras}]" if extras else "coordshard"
        installed = _run(
            *(sys.executable, "-m", "pip", "--python", where / "bin" / "python", "install"),
            *("-q", "--no-compile", "--no-index", "--find-links", wheelhouse, spec),
        )
        assert installed.returncode == 0, installed.stderr
        return where / "bin"

    return make


def test_the_sdk_alone_gives_a_command_that_names_the_extras(venv: Venv) -> None:
    bin_ = venv("")
    imported = _run(bin_ / "python", "-c", "from coordshard_client import CoordinateClient")
    assert imported.returncode == 0, imported.stderr
    listed = _run(bin_ / "coordshard", "--help")
    assert listed.returncode == 0, listed.stderr
    assert "worker" in listed.stdout and "operator" in listed.stdout
    planned = _run(bin_ / "coordshard", "plan", "--shards", "4", "--members", "a,b")
    assert planned.returncode == 0 and "moves:" in planned.stdout, planned.stderr
    assert _run(bin_ / "coordshard", "asyncapi", "--json").returncode == 0
    for args, extra in [
        (("operator", "--standalone"), "coordshard[operator]"),
        (("up", "--help"), "coordshard[service,operator]"),
        (("asyncapi",), "coordshard[operator]"),
    ]:
        out = _run(bin_ / "coordshard", *args)
        assert out.returncode == MISSING_EXTRA and extra in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    worker = _run(bin_ / "coordshard", "worker", "--help")
    assert worker.returncode == 1 and "coordshard[service]" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr


async def test_the_service_extra_alone_runs_a_worker_with_an_nkey(
    venv: Venv, tmp_path: Path
) -> None:
    bin_ = venv("service")
    helped = _run(bin_ / "coordshard", "worker", "--help")
    assert helped.returncode == 0 and "--nats-nkey-seed" in helped.stdout, helped.stderr
    out = _run(bin_ / "coordshard", "operator", "--standalone")  # kopf is imported to run
    assert out.returncode == MISSING_EXTRA and "coordshard[operator]" in out.stderr, out.stderr

    seed = new_user_seed()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    server = start_server(tmp_path / "nats", extra_config=authorization(seed))
    port = free_port()
    log = tmp_path / "worker.log"
    worker = _start(
        bin_ / "coordshard",
        "worker",
        f"--nats-url={server.url}",
        f"--nats-nkey-seed={seed_file}",
        f"--database-url=sqlite:///{tmp_path / 'store.db'}",
        f"--http-port={port}",
        log=log,
    )
    try:

        async def ready() -> bool:
            assert worker.poll() is None, log.read_text()[-3000:]
            return await _ready(port)

        await wait_until(ready, timeout=30, what="the worker's /readyz")
    finally:
        worker.terminate()
        worker.wait(10)
        server.kill()


def _start(*cmd: str | Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with log.open("wb") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as r,
        ):
            return r.status == 200
    except aiohttp.ClientError:
        return False


def test_the_operator_extra_alone_runs_the_operator_commands(venv: Venv) -> None:
    bin_ = venv("operator")
    for args in (("--help",), ("operator", "--help"), ("asyncapi",)):
        out = _run(bin_ / "coordshard", *args)
        assert out.returncode == 0, (args, out.stderr)
    worker = _run(bin_ / "coordshard", "worker", "--help")
    assert worker.returncode == 1 and "coordshard[service]" in worker.stderr, worker.stderr
