"""Pull requests made by hand: one open at a time, answered as soon as anything waits.

Each request is ``{"batch": n, "no_wait": true, "expires": t}`` on the
consumer's ``MSG.NEXT`` subject. The server (2.10+, measured on 2.15) answers
it with whatever is waiting, up to ``n``, and ends it with a 404 status at
once; when nothing waits, it answers at the first arrival the same way, or
ends it with a 408 at ``t``. So a busy worker gets each batch in one burst and
an idle one gets a lone command without delay, and no request lingers open
while a batch is applied (which would make the server send each new arrival
on its own).

nats-py's ``fetch`` sends the same request, but takes each message through
``next_msg``: a task, a ``wait_for`` and a uuid per message. Here the
subscription's callback appends deliveries to a list, and a batch is what the
list holds when the caller asks.

Status messages (404, 408, 409 and 503) come on the request's own reply
subject, with no ack subject; a delivery comes on its stream subject with one.
A status that ends the request is final; any other (409 Consumer Deleted,
409 Leadership Change, 503 no responders: the consumer is not there) is
raised as ``PullError`` from the next ``fetch``.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PullError", "Puller"]

logger = logging.getLogger(__name__)

API_PREFIX = "$JS.API"
ANSWER_GRACE = 0.2
"""Seconds past a request's expiry before it is taken as lost: a reconnect, or a
consumer deleted before it registered the request, ends it with no status. One
taken as lost too early costs nothing: what it still delivers is handed over
with the next batch."""
_ENDED = frozenset({"404", "408"})
"""Statuses that end a request with nothing wrong: no messages, request timeout."""


class PullError(Exception):
    """The server refused or cut a pull request (409, 503, ...)."""

    def __init__(self, status: str, description: str) -> None:
        super().__init__(f"{status} {description}".strip())
        self.status = status
        self.description = description


class Puller:
    """Pulls one durable consumer's messages in batches."""

    def __init__(self, nc: Client, *, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: list[Msg] = []
        self._signal = asyncio.Event()
        self._count = 0
        self._open: str | None = None
        """Reply subject of the request in flight, if one is."""
        self._left = 0
        """Messages the open request may still deliver."""
        self._error: PullError | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:
            self._arrived.append(msg)
            if self._open is not None:
                self._left -= 1
                if self._left <= 0:
                    self._open = None  # served in full: the server sends no status
                    self._signal.set()
        elif msg.subject == self._open:
            headers = msg.headers or {}
            status = headers.get("Status", "")
            self._open = None
            if status not in _ENDED:
                self._error = PullError(status, headers.get("Description", ""))
            self._signal.set()
        # else: the status of a request given up for lost

    async def fetch(self, batch: int, *, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages: those waiting, else the first to arrive within
        ``timeout`` seconds (with any that came in the same instant); [] if none came.

        Raises:
            PullError: the server refused or cut the request.
        """
        if self._sub is None:
            raise RuntimeError("Puller.fetch before start")
        loop = asyncio.get_running_loop()
        if not self._arrived and self._open is None and self._error is None:
            self._count += 1
            self._open = f"{self._inbox}.{self._count}"
            self._left = batch
            request = {"batch": batch, "no_wait": True, "expires": int(timeout * 1e9)}
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._open)
        deadline = loop.time() + timeout + ANSWER_GRACE
        # Wait for the request's end, not its first delivery: the server sends the
        # whole answer at once, then the 404, but it reaches us in several socket
        # reads, and handing over the first read's messages alone would split one
        # answer into several small batches.
        while self._open is not None and self._error is None:
            self._signal.clear()
            try:
                # Not ``wait_for``: on 3.11 it returns instead of raising when cancelled
                # in the same turn as the answer arrives, and the lane would run on.
                async with asyncio.timeout(deadline - loop.time()):
                    await self._signal.wait()
            except TimeoutError:
                logger.debug("pull request %s got no answer; taking it as lost", self._open)
                self._open = None
        if self._error is not None and not self._arrived:
            error, self._error = self._error, None
            raise error
        taken, self._arrived = self._arrived[:batch], self._arrived[batch:]
        return taken
