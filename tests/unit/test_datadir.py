"""``coordshard up`` keeps its data where each platform keeps a user's application data."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordshard_operator.local.datadir import default_data_dir, user_data_dir

HOME = Path("/home/ada")


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        pytest.param("linux", {}, HOME / ".local/share/coordshard", id="linux"),
        pytest.param(
            "linux", {"XDG_DATA_HOME": "/data/ada"}, Path("/data/ada/coordshard"), id="linux-xdg"
        ),
        pytest.param(
            "linux", {"XDG_DATA_HOME": "rel"}, HOME / ".local/share/coordshard", id="xdg-relative"
        ),
        pytest.param("freebsd14", {}, HOME / ".local/share/coordshard", id="other-unix"),
        pytest.param("darwin", {}, HOME / "Library/Application Support/coordshard", id="macos"),
        pytest.param(
            "win32", {"LOCALAPPDATA": "/appdata"}, Path("/appdata/coordshard"), id="windows"
        ),
        pytest.param("win32", {}, HOME / "AppData/Local/coordshard", id="windows-bare"),
    ],
)
def test_user_data_dir_follows_the_platform(
    platform: str, environ: dict[str, str], expected: Path
) -> None:
    assert user_data_dir(platform=platform, environ=environ, home=HOME) == expected


def test_each_group_and_stream_gets_its_own_dir() -> None:
    a = default_data_dir(group="orders", stream="ORDERS", base=HOME)
    b = default_data_dir(group="billing", stream="BILLING", base=HOME)
    assert a == HOME / "orders" / "ORDERS" and a != b
