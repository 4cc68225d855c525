"""docs/service.md shows the permissions ``coordshard_client.permissions`` gives."""

from __future__ import annotations

from pathlib import Path

from coordshard_client.permissions import (
    gateway_permissions,
    operator_permissions,
    server_config,
    worker_permissions,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "service.md"


def test_the_documented_account_config_is_the_generated_one() -> None:
    config = server_config(
        {
            "<worker nkey>": worker_permissions(),
            "<operator nkey>": operator_permissions(),
            "<gateway nkey>": gateway_permissions(),
        }
    )
    assert f"```conf\n{config}```" in DOC.read_text()


def test_a_custom_reply_prefix_reaches_the_worker_and_the_gateway() -> None:
    assert "_INBOX.gw.>" in worker_permissions(reply_prefix="_INBOX.gw").publish
    assert "_INBOX.gw.>" in gateway_permissions(reply_prefix="_INBOX.gw").subscribe
