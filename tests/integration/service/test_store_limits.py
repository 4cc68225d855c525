"""Values a database cannot hold, and results that are no numbers, never reach the store.

Each case is published raw, straight to a command subject, as a hostile or
buggy publisher would: it must end as a validation-error outcome and a dead
letter within a bound, nothing held, and the shard must go on answering valid
traffic. PostgreSQL is the strict one here (``varchar(200)`` keys, no NUL in
text); SQLite takes all of these, so both are run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import CoordinateClient, Translate, shard_of
from coordshard_client.messages import HEADER_KEY, HEADER_REPLY, Outcome
from coordshard_service.store import DeadLetter, Store

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    RunningWorker,
    start_member,
    wait_until,
)

pytestmark = pytest.mark.integration

BOUND = 10.0
"""Seconds within which a bad input must be answered."""
_SHARD = shard_of("sys", SHARDS)


def _subject(op: str, system_id: str = "sys") -> str:
    return f"{PREFIX}.{shard_of(system_id, SHARDS)}.{system_id}.{op}"


def _payload(command: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, "command": command}).encode()


async def _publish(
    nc: Client, subject: str, payload: bytes, *, headers: dict[str, str] | None = None
) -> tuple[int, asyncio.Future[Outcome]]:
    """Publish raw to the stream; the stream sequence and the future outcome."""
    answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def on_reply(msg: Msg) -> None:
        if not answered.done():
            answered.set_result(Outcome.model_validate_json(msg.data))

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=on_reply)
    ack = await nc.jetstream().publish(
        subject, payload, headers={HEADER_REPLY: inbox, **(headers or {})}
    )
    return ack.seq, answered


async def _drained(nc: Client, stream: str) -> None:
    deadline = asyncio.get_running_loop().time() + BOUND
    while (await nc.jetstream().stream_info(stream)).state.messages:
        assert asyncio.get_running_loop().time() < deadline, "the stream did not drain"
        await asyncio.sleep(0.05)


_CREATE = {"op": "create-system", "system_id": "sys", "name": "n", "dimension": 2}


@pytest.mark.parametrize(
    ("subject", "payload", "headers", "reason"),
    [
        pytest.param(
            _subject("create-system"),
            _payload(_CREATE),
            {HEADER_KEY: "k" * 201},
            "idempotency key",
            id="key-201-chars",
        ),
        pytest.param(
            _subject("create-system"),
            _payload(_CREATE),
            {HEADER_KEY: "k\x00k"},
            "idempotency key",
            id="key-nul",
        ),
        pytest.param(
            _subject("create-system"),
            _payload({**_CREATE, "name": "a\x00b"}),
            {},
            "command.create-system.name",
            id="nul-in-name",
        ),
        pytest.param(
            _subject("create-system"),
            _payload({**_CREATE, "units": "\x00"}),
            {},
            "command.create-system.units",
            id="nul-in-units",
        ),
        pytest.param(
            _subject("create-system"),
            _payload({**_CREATE, "\x00evil": 1}),
            {},
            "Extra inputs are not permitted",
            id="nul-in-json-key",
        ),
        pytest.param(
            f"{PREFIX}.{_SHARD}.s\x00s.create-system",
            _payload(_CREATE),
            {},
            "bad subject",
            id="nul-in-subject",
        ),
    ],
)
async def test_a_value_the_database_cannot_hold_is_dead_lettered_and_the_shard_serves_on(
    one_worker: RunningWorker,
    client: CoordinateClient,
    nc: Client,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    seq, answered = await _publish(nc, subject, payload, headers=headers)

    outcome = await asyncio.wait_for(answered, BOUND)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.code == "validation" and reason in outcome.error.message
    store: Store = one_worker.worker.store
    letters = await asyncio.to_thread(store.dead_letters)
    assert [d.stream_seq for d in letters] == [seq]
    assert reason in letters[0].reason and letters[0].data == payload
    assert letters[0].headers[HEADER_REPLY]  # the headers are kept
    if "\x00" in subject:  # kept, with what text cannot hold escaped
        assert letters[0].subject == subject.replace("\x00", "\\x00")

    # Nothing held: the same shard answers at once, no batch was retried.
    made = await client.create_system(system_id="sys", name="ok", dimension=2)
    assert made.name == "ok"
    assert one_worker.worker.metrics.store_retries._value.get() == 0
    await _drained(nc, one_worker.worker.settings.stream)


async def test_a_move_whose_result_is_not_finite_is_refused_and_nothing_is_stored(
    one_worker: RunningWorker, client: CoordinateClient, nc: Client
) -> None:
    await client.create_system(system_id="sys", name="n", dimension=2)
    await client.create_point(system_id="sys", point_id="p", coordinates=(1.7e308, 0))
    move = {
        "op": "move-point",
        "system_id": "sys",
        "point_id": "p",
        "moves": [{"kind": "translate", "delta": [1.7e308, 0]}],
    }
    _, answered = await _publish(nc, _subject("move-point"), _payload(move))

    outcome = await asyncio.wait_for(answered, BOUND)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.code == "validation" and "not finite" in outcome.error.message
    point = await client.get_point(system_id="sys", point_id="p")
    assert (point.coordinates, point.version) == ((1.7e308, 0.0), 1)
    # The SDK refuses nothing it may send: the same move through it is answered the same way.
    with pytest.raises(ValueError, match="not finite"):
        await client.move_point(
            system_id="sys", point_id="p", moves=[Translate(delta=(1.7e308, 0))]
        )


@pytest.mark.parametrize(
    ("op", "command", "where"),
    [
        pytest.param(
            "create-point",
            {"system_id": "sys", "point_id": "p", "coordinates": ["1", 0]},
            "coordinates.0",
            id="string-coordinate",
        ),
        pytest.param(
            "create-point",
            {"system_id": "sys", "point_id": "p", "coordinates": [True, 0]},
            "coordinates.0",
            id="bool-coordinate",
        ),
        pytest.param(
            "move-point",
            {
                "system_id": "sys",
                "point_id": "p",
                "moves": [{"kind": "translate", "delta": [0, "1"]}],
            },
            "delta.1",
            id="string-delta",
        ),
        pytest.param(
            "move-point",
            {
                "system_id": "sys",
                "point_id": "p",
                "moves": [{"kind": "move-to", "position": [False, 1]}],
            },
            "position.0",
            id="bool-position",
        ),
        pytest.param("list-points", {"system_id": "sys", "limit": "5"}, "limit", id="string-limit"),
        pytest.param("list-points", {"system_id": "sys", "limit": True}, "limit", id="bool-limit"),
    ],
)
async def test_numbers_sent_as_strings_or_booleans_are_refused(
    one_worker: RunningWorker,
    client: CoordinateClient,
    nc: Client,
    op: str,
    command: dict[str, Any],
    where: str,
) -> None:
    await client.create_system(system_id="sys", name="n", dimension=2)
    await client.create_point(system_id="sys", point_id="p", coordinates=(0, 0))
    seq, answered = await _publish(nc, _subject(op), _payload({"op": op, **command}))

    outcome = await asyncio.wait_for(answered, BOUND)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.code == "validation" and where in outcome.error.message
    letters = await asyncio.to_thread(one_worker.worker.store.dead_letters)
    assert [d.stream_seq for d in letters] == [seq]
    point = await client.get_point(system_id="sys", point_id="p")
    assert (point.coordinates, point.version) == ((0.0, 0.0), 1)


def test_a_dead_letter_is_stored_whatever_its_message_holds(database_url: str) -> None:
    """NUL (no PostgreSQL text holds it) and lone surrogates (no UTF-8 text does)."""
    store = Store(database_url)
    try:
        store.migrate()
        letter = DeadLetter(
            stream_seq=7,
            subject=f"{PREFIX}.1.s\x00\udcffs.op",
            reason="quotes \x00 and \udcff verbatim",
            headers={"K\x00": "v\x00\udcff"},
            data=b"\x00\xff",
            consumer="c",
        )
        with store.transaction() as tx:
            tx.dead_letter(letter)
            tx.dead_letter(letter)  # kept once
        (kept,) = store.dead_letters()
        assert kept.subject == f"{PREFIX}.1.s\\x00\\udcffs.op"
        assert kept.reason == "quotes \\x00 and \\udcff verbatim"
        assert kept.headers == letter.headers and kept.data == letter.data
    finally:
        store.dispose()


_REFUSED = "refused-by-the-database"


def _refuse_one_point_id(database_url: str) -> None:
    """Make the real database refuse, for a data reason, any point named ``_REFUSED``."""
    store = Store(database_url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            if store.engine.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON points"
                    f" WHEN NEW.point_id = '{_REFUSED}'"
                    " BEGIN SELECT RAISE(ABORT, 'point id refused by a test trigger'); END"
                )
            else:
                conn.exec_driver_sql(
                    f"ALTER TABLE points ADD CONSTRAINT refuse_one CHECK (point_id <> '{_REFUSED}')"
                )
    finally:
        store.dispose()


async def test_a_command_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_applied(
    nats_server: Any, provisioner: Provisioner, database_url: str, nc: Client
) -> None:
    """Defence in depth: a refusal that slipped past validation is isolated to its command."""
    _refuse_one_point_id(database_url)
    systems = [f"s{i}" for i in range(SHARDS)]
    published: list[tuple[str, str, int, asyncio.Future[Outcome]]] = []
    # All published before the worker starts, so they come in one batch.
    for system_id in systems:
        create = {"op": "create-system", "system_id": system_id, "name": "n", "dimension": 2}
        await _publish(nc, _subject("create-system", system_id), _payload(create))
        for point_id in ("a", _REFUSED if system_id == "s0" else "b", "c"):
            point = {
                "op": "create-point",
                "system_id": system_id,
                "point_id": point_id,
                "coordinates": [1, 2],
            }
            seq, answered = await _publish(nc, _subject("create-point", system_id), _payload(point))
            published.append((system_id, point_id, seq, answered))
    await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
    running = await start_member(
        nats_server, provisioner, database_url=database_url, member="w1", incarnation="i1"
    )
    try:
        await wait_until(lambda: running.worker.bound)
        outcomes = await asyncio.wait_for(asyncio.gather(*(f for *_, f in published)), BOUND)
        for (system_id, point_id, _, _), outcome in zip(published, outcomes, strict=True):
            if point_id == _REFUSED:
                assert not outcome.ok and outcome.error is not None
                assert outcome.error.code == "validation"
                assert "database refused" in outcome.error.message
            else:
                assert outcome.ok, (system_id, point_id, outcome)
        refused_seq = next(seq for _, p, seq, _ in published if p == _REFUSED)
        letters = await asyncio.to_thread(running.worker.store.dead_letters)
        assert [d.stream_seq for d in letters] == [refused_seq]
        assert "database refused" in letters[0].reason
        metrics = running.worker.metrics
        assert metrics.store_retries._value.get() == 0
        assert metrics.store_refusals._value.get() == 1
        batches = metrics.registry.get_sample_value("coordshard_worker_batch_size_count")
        messages = metrics.registry.get_sample_value("coordshard_worker_batch_size_sum")
        assert batches is not None and messages == len(published) + len(systems)
        assert batches < messages, "the refused command came in a batch of others"
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=BOUND
        ) as client:
            page = await client.list_points(system_id="s0")
            assert [p.point_id for p in page.points] == ["a", "c"]
            await client.create_point(system_id="s0", point_id="d", coordinates=(0, 0))
        await _drained(nc, provisioner.stream)
    finally:
        await running.shutdown()


async def test_after_an_outage_part_way_through_a_split_only_the_rest_is_applied_again(
    nats_server: Any, provisioner: Provisioner, database_url: str, nc: Client
) -> None:
    """B commits, A is refused, then the database fails (a real SQLSTATE 08006 raised by
    a trigger, once) on C: only C is tried again, so B's first answer is not a replay."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a trigger raising a connection failure needs PostgreSQL")
    _refuse_one_point_id(database_url)
    store = Store(database_url)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE SEQUENCE outage_once")
            conn.exec_driver_sql(
                "CREATE FUNCTION outage_once() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.point_id = 'c' AND nextval('outage_once') = 1 THEN"
                " RAISE EXCEPTION 'test outage' USING ERRCODE = '08006'; END IF;"
                " RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER outage_once BEFORE INSERT ON points"
                " FOR EACH ROW EXECUTE FUNCTION outage_once()"
            )
    finally:
        store.dispose()
    # One batch: S, B commit as its first half; A is refused; C meets the outage.
    create = {"op": "create-system", "system_id": "sys", "name": "n", "dimension": 2}
    answers = [await _publish(nc, _subject("create-system"), _payload(create))]
    for point_id in ("b", _REFUSED, "c"):
        point = {"op": "create-point", "system_id": "sys", "point_id": point_id}
        point["coordinates"] = [0, 0]  # type: ignore[assignment]
        answers.append(await _publish(nc, _subject("create-point"), _payload(point)))
    await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
    running = await start_member(
        nats_server, provisioner, database_url=database_url, member="w1", incarnation="i1"
    )
    try:
        made, b, a, c = await asyncio.wait_for(asyncio.gather(*(f for _, f in answers)), BOUND)
        assert all(o.ok and not o.replayed for o in (made, b, c)), (made, b, c)
        assert a.error is not None and "database refused" in a.error.message
        metrics = running.worker.metrics
        assert metrics.store_retries._value.get() == 1
        assert metrics.store_refusals._value.get() == 1
        assert metrics.registry.get_sample_value("coordshard_worker_batch_size_count") == 1
    finally:
        await running.shutdown()
