"""Break each registered correctness guard in turn and check that its tests catch it.

Run by ``scripts/mutants.sh``. Reads ``tests/mutants.toml``: every entry names a
file, an exact text in it (which must occur exactly once), what to put in its
place, and the pytest node ids that must fail with the guard broken.

Mutants run in private copies of the tree (one per job, ``--jobs``), never in
the checkout itself: the code imported by the tests and by the worker processes
they start is the copy's (``PYTHONPATH``), and each copy's file is restored
after its mutant. Ctrl-C or SIGTERM stops every running test process and
removes the copies.

A mutant is killed when its tests fail (pytest exits 1); a test that errors at
collection, finds no tests, or skips does not kill it. Before any mutation the
union of the listed tests runs once on the intact code and must pass, so a
kill always means the mutation, never an already-broken test; ``--no-baseline``
leaves that out when the whole suite has just passed on the same code (CI).
Hypothesis runs with the ``mutants`` profile (tests/conftest.py): a failing
example is reported as found, not shrunk, which is all a kill needs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "tests" / "mutants.toml"
PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "--hypothesis-profile=mutants",
]
SOURCE_ROOTS = ("operator/src", "service/src")
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", "*.egg-info", "node_modules", "build", "dist",
)  # fmt: skip


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


class Runner:
    """Runs pytest in copies of the tree; stops every run on :meth:`stop`."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run_tests(self, root: Path, tests: tuple[str, ...], *, stop_at_first: bool) -> int:
        # No bytecode from a mutated source may outlive the mutation.
        env = {
            **os.environ,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(str(root / r) for r in SOURCE_ROOTS),
        }
        args = [*PYTEST, *(["-x"] if stop_at_first else []), *tests]
        with self._lock:
            if self._stopping:
                raise KeyboardInterrupt("stopping")
            # A session of its own, so a stop reaches the servers the tests started too.
            proc = subprocess.Popen(
                args, cwd=root, env=env, stdout=subprocess.DEVNULL, start_new_session=True
            )
            self._running.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self._running)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def copy_tree(into: Path) -> Path:
    """A copy of the checkout's sources, tests and docs (no VCS data, venv or caches)."""
    root = into / "tree"
    shutil.copytree(ROOT, root, ignore=NOT_COPIED, symlinks=True)
    return root


def try_mutant(runner: Runner, root: Path, m: Mutant) -> tuple[bool, str]:
    """Apply in ``root``, run, restore; return (killed, how it went)."""
    path = root / m.file
    original = path.read_bytes()
    text = original.decode("utf-8")
    count = text.count(m.find)
    if count != 1:
        return False, f"stale entry: its text occurs {count} times in {m.file}"
    try:
        path.write_text(text.replace(m.find, m.replace, 1), encoding="utf-8")
        code = runner.run_tests(root, m.tests, stop_at_first=True)
    finally:
        path.write_bytes(original)
    if code == 1:
        return True, "killed"
    return False, f"SURVIVED (pytest exit {code})"


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(mutants: list[Mutant], *, jobs: int, baseline: bool, scratch: Path) -> int | None:
    """The number of mutants killed; None when the baseline fails."""
    runner = Runner()
    roots: queue.Queue[Path] = queue.Queue()
    for j in range(jobs):
        roots.put(copy_tree(scratch / f"job{j}"))
    if baseline:
        every_test = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"mutants: baseline, {len(every_test)} tests on the intact code", file=sys.stderr)
        try:
            code = runner.run_tests(scratch / "job0" / "tree", every_test, stop_at_first=False)
        except BaseException:
            runner.stop()
            raise
        if code != 0:
            return None

    def one(m: Mutant) -> tuple[Mutant, bool, str, float]:
        root = roots.get()
        try:
            t0 = time.monotonic()
            ok, how = try_mutant(runner, root, m)
            return m, ok, how, time.monotonic() - t0
        finally:
            roots.put(root)

    killed = 0
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(one, m) for m in mutants]
        for done, future in enumerate(as_completed(futures), 1):
            m, ok, how, took = future.result()
            killed += ok
            print(f"  [{done}/{len(mutants)}] {m.name}: {how} ({took:.1f} s)", file=sys.stderr)
    except BaseException:
        runner.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these mutants (default: all)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="mutants run at once, each in its own copy (2)"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip running the listed tests on the intact code first (the suite just passed)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    known = load(REGISTRY)
    unknown = set(args.names) - {m.name for m in known}
    if unknown:
        print(f"mutants: no such entry: {', '.join(sorted(unknown))}")
        return 2
    mutants = [m for m in known if not args.names or m.name in args.names]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="coordshard-mutants-") as scratch:
        killed = run(
            mutants,
            jobs=max(1, min(args.jobs, len(mutants))),
            baseline=not args.no_baseline,
            scratch=Path(scratch),
        )
    if killed is None:
        print("mutants: the listed tests do not pass on the intact code; fix that first")
        return 2
    took = time.monotonic() - started
    print(f"killed {killed} of {len(mutants)} ({took:.0f} s)")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("mutants: interrupted; every test run was stopped", file=sys.stderr)
        sys.exit(130)
