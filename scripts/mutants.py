"""Break each registered correctness guard in turn and check that its tests catch it.

Run by ``scripts/mutants.sh``. Reads ``tests/mutants.toml``: every entry names a
file, an exact text in it (which must occur exactly once), what to put in its
place, and the pytest node ids that must fail with the guard broken. The file
is restored after each mutant, on success, failure, Ctrl-C or SIGTERM.

A mutant is killed when its tests fail (pytest exits 1); a test that errors at
collection, finds no tests, or skips does not kill it. Before any mutation the
union of the listed tests runs once on the intact code and must pass, so a
kill always means the mutation, never an already-broken test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "tests" / "mutants.toml"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str


def load(path: Path) -> list[Mutant]:
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["mutant"]
    return [
        Mutant(
            name=e["name"],
            file=e["file"],
            find=e["find"],
            replace=e["replace"],
            tests=tuple(e["tests"]),
            why=e.get("why", ""),
        )
        for e in entries
    ]


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_tests(tests: tuple[str, ...], *, stop_at_first: bool) -> int:
    # No bytecode from a mutated source may outlive the mutation.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    args = [*PYTEST, *(["-x"] if stop_at_first else []), *tests]
    return subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL).returncode


def try_mutant(m: Mutant) -> tuple[bool, str]:
    """Apply, run, restore; return (killed, how it went)."""
    path = ROOT / m.file
    original = path.read_bytes()
    text = original.decode("utf-8")
    count = text.count(m.find)
    if count != 1:
        return False, f"stale entry: its text occurs {count} times in {m.file}"
    try:
        path.write_text(text.replace(m.find, m.replace, 1), encoding="utf-8")
        code = run_tests(m.tests, stop_at_first=True)
    finally:
        path.write_bytes(original)
    if code == 1:
        return True, "killed"
    return False, f"SURVIVED (pytest exit {code})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these mutants (default: all)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    mutants = [m for m in load(REGISTRY) if not args.names or m.name in args.names]
    started = time.monotonic()
    every_test = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
    print(f"mutants: baseline, {len(every_test)} tests on the intact code", file=sys.stderr)
    if run_tests(every_test, stop_at_first=False) != 0:
        print("mutants: the listed tests do not pass on the intact code; fix that first")
        return 2
    killed = 0
    for m in mutants:
        t0 = time.monotonic()
        ok, how = try_mutant(m)
        killed += ok
        print(f"  {m.name}: {how} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    took = time.monotonic() - started
    print(f"killed {killed} of {len(mutants)} ({took:.0f} s)")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("mutants: interrupted; the mutated file was restored", file=sys.stderr)
        sys.exit(130)
