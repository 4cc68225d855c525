"""``coordshard worker [ARGS...]``: run a Coordinate Service worker.

The operator package never imports the service package, so this replaces the
process with ``python -m coordshard_service ARGS...`` (same interpreter).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser", "exec_worker", "worker_argv"]


def worker_argv(args: list[str]) -> list[str]:
    """The command line that runs a worker with ``args``."""
    return [sys.executable, "-m", "coordshard_service", *args]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a Coordinate Service worker (python -m coordshard_service)",
        description="Run one worker; all arguments are passed on "
        "(see: coordshard worker -- --help). Settings also come from COORDSHARD_* variables.",
        add_help=False,
    )
    p.add_argument("worker_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return exec_worker(list(args.worker_args))


def exec_worker(argv: list[str]) -> int:
    """Replace this process with a worker; does not return."""
    if argv[:1] == ["--"]:
        argv = argv[1:]
    command = worker_argv(argv)
    os.execv(command[0], command)
    return 0  # pragma: no cover - execv does not return
