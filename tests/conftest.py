"""Suite-wide options and markers, and a limit on hung teardowns.

Tests under ``tests/e2e`` need a real Kubernetes cluster and run only with
``--with-e2e``; everything else runs by default against real servers.

pytest-timeout stops its timer as soon as a test fails (its
``pytest_exception_interact`` hook, meant for pdb), so the teardown after a
failure had no limit at all: one hung 20 minutes in the event loop's
cancellation of tasks the test left running. Every teardown here gets the
test's own timeout; past it the stacks are printed and the run ends (exit 1),
since a teardown stuck in the event loop cannot be interrupted from inside.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

# scripts/mutants.py runs with --hypothesis-profile=mutants: a counterexample found
# is a kill, and shrinking it (minutes on a loaded machine) adds nothing.
settings.register_profile(
    "mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run tests marked e2e (need Docker + kind, or KUBECONFIG)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="needs a real Kubernetes cluster: run with --with-e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_CALL_REPORT] = report


def _timeout_of(item: pytest.Item) -> float:
    """The test's timeout in seconds, as pytest-timeout reads it (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value or 0)


def _end_hung_teardown(item: pytest.Item, limit: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    sys.stderr.write(f"\n+++ teardown of {item.nodeid} still running after {limit:g} s: ")
    sys.stderr.write("ending the run; the stacks follow +++\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    report = item.stash.get(_CALL_REPORT, None)
    if report is not None and report.failed:  # the run ends before its summary
        sys.stderr.write(f"\n+++ the test itself failed +++\n{report.longreprtext}\n")
    sys.stderr.flush()
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    limit = _timeout_of(item)
    if limit <= 0:
        yield
        return
    watchdog = threading.Timer(limit, _end_hung_teardown, args=(item, limit))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
