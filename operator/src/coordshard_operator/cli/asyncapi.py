"""``coordshard asyncapi``: print the Coordinate Service's AsyncAPI 3.0 document.

The document comes from ``coordshard_client.asyncapi`` (the SDK package, which
the operator may import); docs/asyncapi.yaml is this command's output. YAML
needs pyyaml (the operator extra brings it); ``--json`` needs only the SDK.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from coordshard_client.asyncapi import document
from coordshard_client.subjects import DEFAULT_PREFIX

__all__ = ["add_parser", "render"]


def render(*, prefix: str = DEFAULT_PREFIX, as_json: bool = False) -> str:
    """The document as YAML (default) or JSON text."""
    doc = document(prefix=prefix)
    if as_json:
        return json.dumps(doc, indent=2) + "\n"
    import yaml  # here: --json works without pyyaml

    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "asyncapi",
        help="print the AsyncAPI 3.0 document of the Coordinate Service",
        description="Print the AsyncAPI 3.0 document generated from the wire models.",
    )
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="command subject prefix")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render(prefix=args.prefix, as_json=args.json))
    return 0
