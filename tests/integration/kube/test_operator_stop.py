"""The operator leaves promptly on SIGTERM: peered, with CRs live and one just deleted.

A Deployment's rollout, a node drain and the test suite's teardown all send
SIGTERM and wait; an operator that lingers holds its pod Terminating until
the kubelet kills it, and its standby cannot take over any sooner.

What held it: two CRs' daemons starting at once each opened a NATS
connection for the same servers, and the one stored second replaced the
first without closing it. The stray client's tasks (read loop, flusher,
pings) outlived the cleanup handler, and kopf waits 5 s for such "hung"
tasks before cancelling them. The test suite's teardown (3 s, then SIGKILL)
met it whenever two CRs, or a daemon restarted by peering, connected at once.
"""

from __future__ import annotations

import time

import pytest

from coordshard_operator.testing.cluster import OperatorProcess, wait_until

from . import test_operator_on_both
from .test_operator_on_both import Scenario

scenario = test_operator_on_both.scenario  # the fixture: one test, two backends

pytestmark = pytest.mark.integration

EXIT_WITHIN_S = 3.0
"""How long after SIGTERM the operator may take to exit: about 1 s when nothing
lingers (daemons are cancelled at once, the cleanup handler closes NATS); a task
left running costs kopf's 5 s wait for hung tasks."""


async def seconds_to_exit(proc: OperatorProcess) -> float:
    """SIGTERM, then the time until the process is gone; AssertionError past ``EXIT_WITHIN_S``.

    Awaited, not a blocking wait: the double runs on this test's event loop and
    must go on answering the operator while it leaves.
    """
    start = time.monotonic()
    proc.proc.terminate()
    await wait_until(
        lambda: not proc.running(),
        timeout=EXIT_WITHIN_S,
        what=f"the operator to exit within {EXIT_WITHIN_S} s of SIGTERM (pid {proc.pid})",
    )
    return time.monotonic() - start


async def test_a_peered_operator_exits_promptly_after_a_cr_was_deleted(scenario: Scenario) -> None:
    cluster = scenario.cluster
    scenario.enable_standby()
    cluster.add_pod("w-0")
    cluster.add_pod("x-0", app="x")
    # Both CRs exist before the operator starts: their daemons start (and connect) at once.
    cluster.add_cr("orders", shards=2)
    cluster.add_cr("billing", shards=3, app="x", stream="BILLING", subjectPrefix="billing.cmd")
    proc = scenario.start_operator(args=("--priority=100",))
    await wait_until(lambda: cluster.assignment("orders") == {"w-0": "0-1"}, what="orders")
    await wait_until(lambda: cluster.assignment("billing") == {"x-0": "0-2"}, what="billing")
    await wait_until(lambda: len(scenario.peering()) == 1, what="in the peering object")
    cluster.delete_cr("orders")
    await wait_until(lambda: not cluster.has_cr("orders"), what="orders gone (finalizer removed)")
    await seconds_to_exit(proc)
    assert proc.proc.returncode == 0
    await wait_until(lambda: not scenario.peering(), what="its keep-alive withdrawn")
