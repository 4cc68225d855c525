"""A pass grants a crash's orphans before it lists the stream's subjects for strays.

The stray sweep (``strays``) reads one stream info naming every subject stored:
0.2-0.4 s on an idle server at 100k subjects, seconds under load, and with a full
page (100k subjects) it can never prove the stream clean, so it runs on every
pass. Run before the grants it delayed every hand-off by that much
(docs/benchmarks.md, "Scale"); a stray is owned by no consumer, so it is
removed after them, in the same pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nats.js import JetStreamContext

from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

pytestmark = pytest.mark.integration


def _record(engine: Engine, calls: list[str], names: tuple[str, ...]) -> None:
    for name in names:
        fn: Callable[..., Awaitable[object]] = getattr(engine.api, name)

        async def wrapped(*args: object, _fn: Callable[..., Awaitable[object]] = fn,
                          _name: str = name, **kw: object) -> object:  # fmt: skip
            calls.append(_name)
            return await _fn(*args, **kw)

        setattr(engine.api, name, wrapped)


async def test_a_crash_is_granted_before_the_stray_sweep_lists_the_stream(
    js: JetStreamContext, stream_name: str
) -> None:
    config = GroupConfig(stream=stream_name, subject_prefix="o.cmd", group="g", shards=64)
    a, b = (MemberInfo.of(group="g", member=m, incarnation="1") for m in ("a", "b"))
    first = Engine(js, config)
    await first.ensure_stream()
    await run_pass(first, shards=64, members={a.id: a, b.id: b}, epoch=1)

    # A restarted operator sweeps on its first pass; b has died meanwhile.
    engine = Engine(js, config)
    calls: list[str] = []
    _record(engine, calls, ("put_consumer", "delete_consumer", "stream_subjects"))
    done = await run_pass(engine, shards=64, members={a.id: a}, epoch=2)

    assert done.report is not None and done.swept is not None  # both ran in this pass
    assert "put_consumer" in calls and "delete_consumer" in calls
    assert calls.index("stream_subjects") > max(
        i for i, c in enumerate(calls) if c in ("put_consumer", "delete_consumer")
    ), calls
