"""A poison corpus: every kind of bad input, and seeded random mutations of valid
commands, published straight to the command subjects while valid SDK traffic runs
on every shard — against a real nats-server and both stores.

What must hold: each bad input that the stream takes ends, within a bound, as an
error outcome (when it named a reply subject we may answer) or a dead letter; a
subject the stream cannot own is refused by the stream; no worker dies, wedges
or turns deaf; the valid traffic loses nothing and every shard keeps answering;
and the stream drains.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import CoordinateClient, Translate, shard_of
from coordshard_client.messages import HEADER_KEY, HEADER_REPLY
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.store import Store

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    RunningWorker,
    raw_publisher,
    start_member,
    wait_drained,
    wait_until,
)

pytestmark = pytest.mark.integration

BOUND = 30.0
"""Seconds within which every bad input must have ended and the stream drained."""
MUTATIONS = 150
SEED = 20261203
REPLY = "<ours>"
"""Stands for a well-formed reply subject of ours, one per input, filled in at publish."""


def system_per_shard() -> dict[int, str]:
    """One system id on every shard, for the valid traffic."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < SHARDS:
        found.setdefault(shard_of(f"v{i}", SHARDS), f"v{i}")
        i += 1
    return found


@dataclass
class Poison:
    """One bad input: its kind, raw subject, headers and body; ``reply`` says whether the
    worker may answer it (its reply header is ours and well formed)."""

    kind: str
    subject: bytes
    body: bytes
    headers: dict[str, str]
    reply: bool = True
    owned: bool = True
    """The subject is one a consumer owns (the stream takes it); else it must be refused."""


def command(op: str, system_id: str, **fields: object) -> bytes:
    return json.dumps({"v": 1, "command": {"op": op, "system_id": system_id, **fields}}).encode()


def subject_of(system_id: str, op: str) -> bytes:
    return f"{PREFIX}.{shard_of(system_id, SHARDS)}.{system_id}.{op}".encode()


def corpus(inbox: str) -> list[Poison]:
    """The hand-made kinds, one (or a few) of each."""
    ok = {HEADER_REPLY: REPLY}
    valid_get = command("get-point", "p1", point_id="a")
    create = command("create-system", "p1", name="n", dimension=2)
    move = command("move-point", "p1", point_id="a", moves=[{"kind": "translate", "delta": [1, 0]}])
    s = subject_of("p1", "get-point")
    items = [
        Poison("malformed JSON", subject_of("p1", "create-system"), b"{not json", ok),
        Poison("unknown op", subject_of("p1", "explode"), command("explode", "p1"), ok),
        Poison(
            "schema-invalid",
            subject_of("p1", "create-system"),
            command("create-system", "p1", name="n", dimension=5),
            ok,
        ),
        Poison("oversize", subject_of("p1", "create-system"), create + b" " * 70_000, ok),
        Poison(
            "wrong shard",
            f"{PREFIX}.{(shard_of('p1', SHARDS) + 1) % SHARDS}.p1.create-system".encode(),
            create,
            ok,
        ),
        Poison("subject/payload mismatch", subject_of("p1", "delete-system"), create, ok),
        # Reply subjects that must not be used.
        Poison(
            "reply over the control line",
            s,
            valid_get,
            {HEADER_REPLY: inbox + "." + "z" * 5000},
            reply=False,
        ),
        Poison("reply with whitespace", s, valid_get, {HEADER_REPLY: f"{inbox}.a b"}, reply=False),
        Poison(
            "reply into another stream",
            s,
            valid_get,
            {HEADER_REPLY: "billing.cmd.0.x.get-point"},
            reply=False,
        ),
        Poison(
            "reply onto our command subject", s, valid_get, {HEADER_REPLY: s.decode()}, reply=False
        ),
        Poison("reply with a wildcard", s, valid_get, {HEADER_REPLY: f"{inbox}.>"}, reply=False),
        # Bytes the worker cannot read.
        Poison(
            "subject not UTF-8",
            f"{PREFIX}.{shard_of('p1', SHARDS)}.".encode() + b"\xff\xfe.get-point",
            valid_get,
            ok,
        ),
        # Values the store cannot hold.
        Poison(
            "key of 201 characters",
            subject_of("p1", "create-system"),
            create,
            {**ok, HEADER_KEY: "k" * 201},
        ),
        Poison(
            "NUL in a system name",
            subject_of("p1", "create-system"),
            command("create-system", "p1", name="a\x00b", dimension=2),
            ok,
        ),
        Poison(
            "NUL in a JSON key",
            subject_of("p1", "create-system"),
            b'{"v":1,"command":{"op":"create-system","system_id":"p1","name":"n","dimension":2,"x\\u0000":1}}',
            ok,
        ),
        Poison(
            "NUL in the subject",
            f"{PREFIX}.{shard_of('p1', SHARDS)}.p\x001.get-point".encode(),
            valid_get,
            ok,
        ),
        # Numbers.
        Poison(
            "result not finite",
            subject_of("big", "move-point"),
            command(
                "move-point",
                "big",
                point_id="b",
                moves=[{"kind": "translate", "delta": [1.7e308, 0]}],
            ),
            ok,
        ),
        Poison(
            "coordinates as strings",
            subject_of("p1", "move-point"),
            command(
                "move-point", "p1", point_id="a", moves=[{"kind": "translate", "delta": ["1", "0"]}]
            ),
            ok,
        ),
        Poison(
            "booleans as coordinates",
            subject_of("p1", "create-point"),
            command("create-point", "p1", point_id="b", coordinates=[True, False]),
            ok,
        ),
        Poison(
            "limit as a string",
            subject_of("p1", "list-points"),
            command("list-points", "p1", limit="10"),
            ok,
        ),
        Poison("valid move as control", subject_of("p1", "move-point"), move, ok),
    ]
    # Subjects no consumer can own: the stream must refuse them.
    for token in (str(SHARDS), "4095", "99999999999", "03", "x", "-1", "+1"):
        items.append(
            Poison(
                f"shard token {token}",
                f"{PREFIX}.{token}.p1.get-point".encode(),
                valid_get,
                ok,
                owned=False,
            )
        )
    items.append(
        Poison(
            "too few tokens",
            f"{PREFIX}.{shard_of('p1', SHARDS)}.get-point".encode(),
            valid_get,
            ok,
            owned=False,
        )
    )
    return items


def mutations(rng: random.Random) -> list[Poison]:
    """Seeded random mutations of valid commands: bytes flipped, cut, inserted; fields
    dropped, retyped or set to extremes. Some stay valid; that is allowed."""
    seeds = [
        ("create-system", {"name": "n", "dimension": 2}),
        ("create-point", {"point_id": "m", "coordinates": [1, 2]}),
        ("move-point", {"point_id": "a", "moves": [{"kind": "move-to", "position": [3, 4]}]}),
        ("list-points", {"limit": 5}),
        ("get-point", {"point_id": "a"}),
    ]
    extremes: list[object] = [None, True, "", "x" * 300, -1, 2**63, 1e308, -1e308, [], {}, "\x00"]
    out = []
    for n in range(MUTATIONS):
        op, fields = rng.choice(seeds)
        system_id = f"m{n % 7}"
        doc = {"v": 1, "command": {"op": op, "system_id": system_id, **fields}}
        how = rng.randrange(4)
        if how == 0:  # drop or retype a field
            key = rng.choice(list(doc["command"]))
            if rng.random() < 0.5:
                del doc["command"][key]
            else:
                doc["command"][key] = rng.choice(extremes)
            body = json.dumps(doc).encode()
        else:
            raw = bytearray(json.dumps(doc).encode())
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(raw))
                if how == 1:
                    raw[at] = rng.randrange(256)
                elif how == 2:
                    del raw[at:]
                    break
                else:
                    raw[at:at] = bytes([rng.randrange(256)])
            body = bytes(raw)
        out.append(
            Poison(f"mutation {n} ({how})", subject_of(system_id, op), body, {HEADER_REPLY: REPLY})
        )
    return out


@pytest.fixture
async def two_workers(
    nats_server: NatsServer, provisioner: Provisioner, database_url: str
) -> AsyncIterator[list[RunningWorker]]:
    halves = {"a": list(range(0, SHARDS, 2)), "b": list(range(1, SHARDS, 2))}
    running = []
    for member, shards in halves.items():
        await provisioner.assign(member=member, incarnation="1", shards=shards)
        running.append(
            await start_member(
                nats_server, provisioner, database_url=database_url, member=member, incarnation="1"
            )
        )
    await wait_until(lambda: all(r.worker.bound for r in running))
    yield running
    for r in running:
        await r.shutdown()


async def test_no_poison_kills_wedges_or_deafens_a_worker_and_the_stream_drains(
    nats_server: NatsServer,
    nc: Client,
    provisioner: Provisioner,
    two_workers: list[RunningWorker],
    client: CoordinateClient,
) -> None:
    js = nc.jetstream()
    systems = system_per_shard()
    for system_id in [*systems.values(), "p1", "big"]:
        await client.create_system(system_id=system_id, name="v", dimension=2)
        await client.create_point(system_id=system_id, point_id="a", coordinates=(0, 0))
    await client.create_point(system_id="big", point_id="b", coordinates=(1.7e308, 0))

    # Valid traffic on every shard throughout: one move per system per round.
    moves = {s: 0 for s in systems.values()}
    stop = asyncio.Event()

    async def valid_traffic() -> None:
        while not stop.is_set():
            await asyncio.gather(
                *(
                    client.move_point(system_id=s, point_id="a", moves=[Translate(delta=(1, 0))])
                    for s in systems.values()
                )
            )
            for s in systems.values():
                moves[s] += 1

    traffic = asyncio.create_task(valid_traffic())

    inbox = nc.new_inbox()
    outcomes: dict[str, bytes] = {}
    acks: dict[str, bytes] = {}

    async def on_reply(msg: Msg) -> None:
        outcomes[msg.subject.removeprefix(inbox + ".")] = msg.data

    async def on_ack(msg: Msg) -> None:
        acks[msg.subject.removeprefix(inbox + ".ack.")] = msg.data

    await nc.subscribe(inbox + ".*", cb=on_reply)
    await nc.subscribe(inbox + ".ack.*", cb=on_ack)
    await nc.flush()  # the subscriptions are in place before anything is published
    rng = random.Random(SEED)
    poisons = corpus(inbox) + mutations(rng)
    owned = {str(n) for n, p in enumerate(poisons) if p.owned}
    async with raw_publisher(nats_server) as raw:
        for n, p in enumerate(poisons):
            if p.headers.get(HEADER_REPLY) == REPLY:
                p.headers = {**p.headers, HEADER_REPLY: f"{inbox}.r{n}"}
            await raw.publish(p.subject, p.body, reply=f"{inbox}.ack.{n}", headers=p.headers)
        await raw.flush()
        try:
            await wait_until(lambda: owned <= acks.keys(), timeout=BOUND)
        except AssertionError:
            missing = [poisons[int(n)].kind for n in owned - acks.keys()]
            raise AssertionError(f"no stream ack for: {missing}") from None

    # The stream refused what no consumer owns (no stream takes the subject, so no
    # publish ack comes; an error if one does), and took the rest.
    stored: dict[int, int] = {}
    for n, p in enumerate(poisons):
        ack = json.loads(acks.get(str(n)) or b"{}")
        if p.owned:
            assert "seq" in ack, (p.kind, ack)
            stored[n] = ack["seq"]
        else:
            assert "seq" not in ack, (p.kind, ack)

    # Every stored bad input ends, within the bound, as an outcome or a dead letter.
    store: Store = two_workers[0].worker.store
    deadline = asyncio.get_running_loop().time() + BOUND
    while True:
        letters = {d.stream_seq for d in await asyncio.to_thread(store.dead_letters)}
        answered = {int(k.removeprefix("r")) for k in outcomes if k.startswith("r")}
        open_ = [
            poisons[n].kind
            for n, seq in stored.items()
            if seq not in letters and not (poisons[n].reply and n in answered)
        ]
        if not open_:
            break
        assert asyncio.get_running_loop().time() < deadline, f"never ended: {open_}"
        await asyncio.sleep(0.1)
    for n, seq in stored.items():
        if not poisons[n].reply:
            assert seq in letters, f"{poisons[n].kind}: must be dead-lettered, not answered"

    # Nothing came back on subjects a reply must never reach.
    stop.set()
    await traffic

    await wait_drained(js, provisioner.stream, timeout=BOUND)

    # No worker died, wedged or went deaf; every shard answers; nothing valid was lost.
    for r in two_workers:
        assert not r.task.done() and r.worker.bound and r.worker.nc.is_connected
        assert r.worker.serving()
    for s, count in moves.items():
        point = await client.get_point(system_id=s, point_id="a", timeout=5)
        assert point.coordinates == (float(count), 0.0), s
