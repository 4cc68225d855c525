"""Ending a task for good, on Python 3.11 too.

On 3.11, ``asyncio.wait_for`` returns its result instead of raising when the
task running it is cancelled in the same turn of the loop as what it waits on
finishes; nats-py's ``next_msg``, ``fetch`` and ``request`` are built on it. A
task so cancelled runs on, and ``task.cancel(); await task`` then waits as long
as the task does: for a pull loop, for ever. ``cancel_and_wait`` cancels again
until every task has ended. (3.12 rebuilt ``wait_for`` on ``asyncio.timeout``,
which this project's own code uses instead.)
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["RECANCEL_S", "cancel_and_wait"]

RECANCEL_S: Final = 1.0
"""Seconds between cancels of a task that has not ended yet: time enough for one that
took the cancel to finish its clean-up (a ``finally``) before the next one cuts it."""


async def cancel_and_wait(*tasks: asyncio.Future[Any], every: float = RECANCEL_S) -> None:
    """Cancel ``tasks`` and return once all have ended, cancelling again every ``every``
    seconds any still running (it swallowed the cancel, or its clean-up is slow). What
    they returned or raised is dropped, as ``gather(..., return_exceptions=True)`` would."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
