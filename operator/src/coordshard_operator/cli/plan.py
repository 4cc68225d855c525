"""``coordshard plan``: run the planner on the command line.

For people: a table of the assignment and the moves. For machines
(``--json``): ``{"assignment", "moves", "unassigned", "steps"}``, and with the
blocks layout (the default, as for a new stream) ``"blocks"`` and ``"lanes"``;
the ``assignment`` object can be fed back as ``--previous`` to plan the next event.

With the blocks layout the plan is over K = ``blocks_of(N)`` blocks, and the
lane steps are the engine's (``lanes.plan_lanes``) for a group whose lanes are
what a quiet pass leaves: each member's blocks in lanes of ``LANE_BLOCKS``.
``--previous`` names no lanes, so a real group's lanes (after crashes, before a
merge) may be more; the blocks that move and the lanes created are the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coordshard_client.subjects import blocks_of
from coordshard_operator.rebalancer import ranges
from coordshard_operator.rebalancer.balancing import InvalidAssignmentError
from coordshard_operator.rebalancer.lanes import (
    LanePlan,
    LaneState,
    chunked,
    plan_lanes,
    release_order,
)
from coordshard_operator.rebalancer.planning import Plan, blocks_of_assignment, plan

__all__ = [
    "add_parser",
    "lane_plan",
    "load_previous",
    "plan_to_json",
    "quiet_lanes",
    "render_plan",
    "shard_ranges",
]

EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="assign shards to members and print the moves",
        description="Assign N shards to the given live members, keeping what the "
        "previous assignment gives them where balance allows.",
    )
    p.add_argument("--shards", type=int, required=True, metavar="N", help="shard count (>= 1)")
    p.add_argument("--members", required=True, help="comma-separated live member names, e.g. a,b,c")
    p.add_argument(
        "--previous",
        type=Path,
        metavar="FILE",
        help='JSON: {"member": [shards...]} or the output of --json',
    )
    p.add_argument(
        "--layout",
        choices=["blocks", "shards"],
        default="blocks",
        help="blocks (a new stream's: members own blocks of shards on lanes) or shards "
        "(a stream made before blocks); default blocks",
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=run)


class PlanInputError(ValueError):
    """The command line or the --previous file is unusable."""


def load_previous(path: Path) -> dict[str, list[int]]:
    """Read a previous assignment: a bare mapping or ``{"assignment": mapping}``."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise PlanInputError(f"cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise PlanInputError(f"{path} is not JSON: {e.msg} at line {e.lineno}") from e
    if isinstance(data, dict) and isinstance(data.get("assignment"), dict):
        data = data["assignment"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str)
        and isinstance(v, list)
        and all(isinstance(s, int) and not isinstance(s, bool) for s in v)
        for k, v in data.items()
    ):
        raise PlanInputError(f"{path} must map member names to lists of shard numbers")
    return data


def parse_members(text: str) -> list[str]:
    members = [m.strip() for m in text.split(",")]
    if any(not m for m in members):
        raise PlanInputError(f"--members {text!r} has an empty name")
    return members


def quiet_lanes(previous: dict[str, list[int]], *, blocks: int) -> dict[str, LaneState]:
    """The lanes a quiet group with ``previous`` holds (named ``<member>#<i>``)."""
    return {
        f"{m}#{i}": LaneState(m, run)
        for m, owned in sorted(blocks_of_assignment(previous, blocks=blocks).items())
        for i, run in enumerate(chunked(owned))
    }


def lane_plan(lanes: dict[str, LaneState], result: Plan, *, blocks: int) -> LanePlan:
    """The engine's lane steps from ``lanes`` to ``result``."""
    want = blocks_of_assignment(result.balance.assignment, blocks=blocks)
    return plan_lanes(lanes, want, live=result.balance.assignment)


def lanes_to_json(lanes: dict[str, LaneState], steps: LanePlan) -> dict[str, Any]:
    return {
        "fence": [{"lane": n, "member": lanes[n].member_id} for n in steps.fence],
        "retire": [
            {"lane": n, "member": lanes[n].member_id, "blocks": list(lanes[n].blocks)}
            for n in steps.retire
        ],
        "create": [
            {"member": new.member_id, "blocks": list(new.blocks), "reason": new.reason}
            for new in steps.create
        ],
    }


def render_lanes(lanes: dict[str, LaneState], steps: LanePlan, *, blocks: int) -> str:
    lines = [
        f"lane steps, as the engine runs them ({blocks} blocks; fence and retire "
        "before any create):"
    ]
    for n in steps.fence:
        lines.append(f"  fence   {n}  ({len(lanes[n].blocks)} blocks)")
    for n in steps.retire:
        lines.append(f"  retire  {n}  blocks {ranges.format_ranges(lanes[n].blocks)}")
    for new in steps.create:
        lines.append(
            f"  create  {new.member_id}  blocks {ranges.format_ranges(new.blocks)}  ({new.reason})"
        )
    if steps.converged:
        lines.append("  none")
    return "\n".join(lines)


def plan_to_json(result: Plan) -> dict[str, Any]:
    b = result.balance
    return {
        "assignment": {m: list(s) for m, s in b.assignment.items()},
        "moves": [
            {"shard": mv.shard, "from": mv.source, "to": mv.target, "reason": mv.reason}
            for mv in b.moves
        ],
        "unassigned": list(b.unassigned),
        "steps": [
            {
                "action": st.action,
                "member": st.member,
                "shards": list(st.shards),
                "changed": list(st.changed),
            }
            for st in result.steps
        ],
    }


def shard_ranges(shards: tuple[int, ...]) -> str:
    """Compact ``0-3,7,9-10`` form of a shard list; ``-`` for none (a table cell)."""
    return ranges.format_ranges(shards) or "-"


def render_plan(result: Plan) -> str:
    b = result.balance
    width = max([6, *(len(m) for m in b.assignment)])
    lines = [f"{'MEMBER':<{width}}  COUNT  SHARDS"]
    for m, shards in b.assignment.items():
        lines.append(f"{m:<{width}}  {len(shards):>5}  {shard_ranges(shards)}")
    if b.unassigned:
        lines.append(f"unassigned: {shard_ranges(b.unassigned)}")
    lines.append("")
    if not b.moves:
        lines.append("moves: none")
    else:
        lines.append(f"moves: {len(b.moves)}")
        lines.append(f"{'SHARD':>5}  {'FROM':<{width}}  {'TO':<{width}}  REASON")
        for mv in b.moves:
            lines.append(
                f"{mv.shard:>5}  {mv.source or '-':<{width}}  {mv.target:<{width}}  {mv.reason}"
            )
    if b.ignored_pins:
        lines.append(f"ignored pins (member not live): {shard_ranges(b.ignored_pins)}")
    lines.append("")
    lines.append(f"hand-off steps, as the engine runs them: {len(result.steps) or 'none'}")
    for st in result.steps:
        lines.append(f"  {st.action:<6}  {st.member:<{width}}  {shard_ranges(st.changed)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        members = parse_members(args.members)
        previous = load_previous(args.previous) if args.previous else {}
        blocks = blocks_of(args.shards) if args.layout == "blocks" else None
        lanes = quiet_lanes(previous, blocks=blocks) if blocks is not None else {}
        result = plan(shards=args.shards, members=members, previous=previous, blocks=blocks,
                      release_order=release_order(lanes) if lanes else None)  # fmt: skip
        if blocks is not None:
            steps = lane_plan(lanes, result, blocks=blocks)
    except (PlanInputError, InvalidAssignmentError, ValueError) as e:
        sys.stderr.write(f"coordshard plan: error: {e}\n")
        return EXIT_USAGE
    if args.json:
        out = plan_to_json(result)
        if blocks is not None:
            out |= {"blocks": blocks, "lanes": lanes_to_json(lanes, steps)}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        text = render_plan(result)
        if blocks is not None:
            text += "\n\n" + render_lanes(lanes, steps, blocks=blocks)
        sys.stdout.write(text + "\n")
    return 0
