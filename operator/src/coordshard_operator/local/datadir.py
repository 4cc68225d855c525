"""Where ``coordshard up`` keeps its data when not told: a per-user data directory.

A store in a temporary directory, deleted at exit, made a second ``up`` against a
NATS that kept its stream start with an empty store, without a word. So by
default the data (nats-server's JetStream store, the SQLite store, logs and pid
files) lives where each platform keeps an application's user data, one
subdirectory per group and stream so that two groups never share a store:

- Linux and other Unix: ``$XDG_DATA_HOME/coordshard``, else ``~/.local/share/coordshard``
  (the XDG Base Directory specification)
- macOS: ``~/Library/Application Support/coordshard``
- Windows: ``%LOCALAPPDATA%\\coordshard``, else ``~\\AppData\\Local\\coordshard``

``--throwaway`` keeps the old behaviour (a temporary directory, deleted at exit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["APP_NAME", "default_data_dir", "user_data_dir"]

APP_NAME = "coordshard"


def user_data_dir(
    *,
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
) -> Path:
    """This user's data directory for coordshard, by the platform's convention."""
    home = home or Path.home()
    if platform == "win32":
        base = environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / APP_NAME
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    xdg = environ.get("XDG_DATA_HOME", "")
    # The specification: a relative path in $XDG_DATA_HOME is invalid and ignored.
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base_dir / APP_NAME


def default_data_dir(*, group: str, stream: str, base: Path | None = None) -> Path:
    """The data directory of one group and stream: ``<user data dir>/<group>/<stream>``."""
    return (base or user_data_dir()) / group / stream
