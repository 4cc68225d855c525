"""The embedded nats-server helper: a GOMAXPROCS given reaches the process, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordshard_operator.local.natsserver import NatsServer, start_server

pytestmark = pytest.mark.integration


def _environ(server: NatsServer) -> dict[str, str]:
    assert server.process is not None
    raw = Path(f"/proc/{server.process.pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.parametrize("gomaxprocs", [1, None])
def test_gomaxprocs_reaches_the_server_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gomaxprocs: int | None
) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    server = start_server(tmp_path, gomaxprocs=gomaxprocs)
    try:
        assert server.running
        assert _environ(server).get("GOMAXPROCS") == (None if gomaxprocs is None else "1")
    finally:
        server.kill()
