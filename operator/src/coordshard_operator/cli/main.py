"""The ``coordshard`` command: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job; this file only wires
argparse. Subcommands that belong to the service (``worker``) run it as a
separate process, because the operator and service packages never import
each other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from coordshard_operator.cli import asyncapi as asyncapicmd
from coordshard_operator.cli import bench
from coordshard_operator.cli import kube as operatorcmd
from coordshard_operator.cli import plan as plancmd
from coordshard_operator.cli import worker as workercmd
from coordshard_operator.local import up

__all__ = ["main"]

EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordshard",
        description="Same key, same worker: sharded NATS JetStream consumers, rebalanced.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up.add_parser(sub)
    plancmd.add_parser(sub)
    bench.add_parser(sub)
    workercmd.add_parser(sub)
    asyncapicmd.add_parser(sub)
    operatorcmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        # Everything after "worker" belongs to the worker, including --help.
        return workercmd.exec_worker(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
