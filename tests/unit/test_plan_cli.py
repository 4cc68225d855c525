"""`coordshard plan` on the command line: the table, the JSON, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordshard_operator.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--shards", "8", "--members", "a,b,c", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"assignment", "moves", "unassigned"}
    assert sorted(s for shards in data["assignment"].values() for s in shards) == list(range(8))
    assert all(mv["from"] is None and mv["reason"] == "unassigned" for mv in data["moves"])


def test_json_output_feeds_back_as_previous(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, out, _ = run(capsys, "plan", "--shards", "12", "--members", "a,b,c", "--json")
    prev = tmp_path / "prev.json"
    prev.write_text(out)
    code, out, _ = run(
        capsys, "plan", "--shards", "12", "--members", "a,b", "--previous", str(prev), "--json"
    )
    assert code == 0
    moves = json.loads(out)["moves"]
    assert len(moves) == 4 and all(mv["from"] == "c" for mv in moves)


def test_table_output_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "docs/examples/plan/previous.json"
    code, out, _ = run(
        capsys,
        "plan",
        "--shards",
        "16",
        "--members",
        "pod-a,pod-b,pod-c",
        "--previous",
        str(example),
    )
    assert code == 0
    assert "MEMBER" in out and "moves: 4" in out and "member-lost" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--shards", "0", "--members", "a"], "shard count", id="n-below-1"),
        pytest.param(["--shards", "4", "--members", "a,b,a"], "listed twice", id="duplicate"),
        pytest.param(["--shards", "4", "--members", "a,,b"], "empty name", id="empty-name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "plan", *argv)
    assert code == 2
    assert out == ""
    assert message in err and err.count("\n") == 1


def test_previous_with_shard_out_of_range(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps({"a": [0, 9]}))
    code, _, err = run(capsys, "plan", "--shards", "4", "--members", "a", "--previous", str(prev))
    assert code == 2 and "outside 0..3" in err


@pytest.mark.parametrize("content", ["not json", '{"a": "x"}', "[1, 2]"])
def test_unusable_previous_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    prev = tmp_path / "prev.json"
    prev.write_text(content)
    code, _, err = run(capsys, "plan", "--shards", "4", "--members", "a", "--previous", str(prev))
    assert code == 2 and err.startswith("coordshard plan: error:")


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from coordshard_operator.cli.main import build_parser

    code, out, _ = run(capsys, "--help")
    assert code == 0
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(sub.choices)
    assert {"plan", "bench", "up", "worker", "asyncapi"} <= commands
    # `worker --help` replaces the process with the worker's own help (tested on its own).
    for cmd in sorted(commands - {"worker"}):
        assert cmd in out
        code, sub_out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "usage:" in sub_out


def test_bench_plan_prints_a_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "bench", "plan", "--quick", "--out", str(tmp_path))
    assert code == 0
    assert "| shards | members | event |" in out
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert len(saved["rows"]) == 18
    # Every row moved exactly the optimum.
    assert all(row[-2] == row[-1] for row in saved["rows"])


def test_bench_refuses_an_unknown_suite(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bench", "nope")
    assert code == 2 and "unknown suite" in err


def test_the_lazy_command_list_matches_the_modules_it_names() -> None:
    """``coordshard --help`` lists subcommands without importing them; the help lines
    it shows must be the ones each module registers (the full install has every extra)."""
    import argparse

    from coordshard_operator.cli.main import COMMANDS, build_parser

    for name, cmd in COMMANDS.items():
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {c.dest: c.help for c in sub._choices_actions}
        assert helps[name] == cmd.help, name
        assert sub.choices[name].get_default("run") is not None, name


def test_blocks_layout_prints_the_lane_steps_of_a_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "plan", "--shards", "4096", "--members", "a,b,c", "--json")
    first = json.loads(out)
    assert code == 0 and first["blocks"] == 512
    assert all(len(new["blocks"]) <= 32 for new in first["lanes"]["create"])
    prev = tmp_path / "prev.json"
    prev.write_text(out)
    code, out, _ = run(
        capsys, "plan", "--shards", "4096", "--members", "a,b", "--previous", str(prev), "--json"
    )
    lanes = json.loads(out)["lanes"]
    assert {f["member"] for f in lanes["fence"]} == {"c"}
    assert lanes["retire"] == []  # the survivors' lanes are left alone
    gained = sorted(b for new in lanes["create"] for b in new["blocks"])
    assert gained == sorted({s % 512 for s in first["assignment"]["c"]})
