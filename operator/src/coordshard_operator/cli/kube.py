"""``coordshard operator``: run the kopf operator (the handlers in ``handlers``).

Flags map to kopf's own run options; everything else comes from
``COORDSHARD_*`` settings. Peering: replicas of one Deployment need distinct
``--priority`` values (equal priorities make kopf freeze all of them), or
``--standalone`` when only one runs.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf)",
        description="Keep every CoordinateShards' consumers balanced over its Ready pods.",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable); default: cluster-wide",
    )
    p.add_argument("--standalone", action="store_true", help="no peering (one replica only)")
    p.add_argument(
        "--priority", type=int, default=0, help="peering priority (distinct per replica)"
    )
    p.add_argument("--peering", default="coordshard", help="peering object name")
    p.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the other subcommands do not need kopf

    from coordshard_operator.kube import handlers  # registers the handlers

    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=args.standalone,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        priority=args.priority,
        peering_name=None if args.standalone else args.peering,
        liveness_endpoint=args.liveness,
    )
    del handlers
    return 0
