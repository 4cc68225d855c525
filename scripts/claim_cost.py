"""What an attempt claim (``coordshard_service.attempts``) costs a batch, in worker CPU.

Applies batches of moves over 16 shards three ways, interleaved, and prints the
least CPU microseconds per batch over the rounds (the machine is shared; the
least is the least disturbed): ``plain`` (``apply_batch``), ``steady``
(``apply_guarded`` past the lane's doubt: no claim) and ``claimed`` (a claim in
its own transaction, then the batch). Usage, from the checkout's root:

    .venv/bin/python scripts/claim_cost.py sqlite:///claims.db 8
    .venv/bin/python scripts/claim_cost.py postgresql+psycopg://user@host/db 64

The database must be empty or a scratch one: the script migrates it and writes.
"""

from __future__ import annotations

import sys
import time

from coordshard_client.messages import Command, CreatePoint, CreateSystem, MovePoint, Translate
from coordshard_client.subjects import shard_of
from coordshard_service.attempts import apply_guarded
from coordshard_service.cache import Cache
from coordshard_service.commands import Incoming, apply_batch
from coordshard_service.metrics import Metrics
from coordshard_service.store import Store

SHARDS = 16
STREAM = "CLAIMS@2000-01-01T00:00:00.000000Z"
BATCHES = 200
ROUNDS = 8


def main(url: str, size: int) -> None:
    store = Store(url)
    store.migrate()
    metrics, cache = Metrics(), Cache(100_000)
    systems = [f"s{i}" for i in range(SHARDS)]
    seq = 0

    def incoming(command: Command, system_id: str) -> Incoming:
        nonlocal seq
        seq += 1
        shard = shard_of(system_id, SHARDS)
        return Incoming(seq, "x", shard, f"k{seq}", None, command)

    def apply(items: list[Incoming]) -> None:
        apply_batch(
            store, cache, items, shards=SHARDS, stream=STREAM, consumer="c", metrics=metrics
        )

    apply([incoming(CreateSystem(system_id=s, name="n", dimension=2), s) for s in systems])
    apply(
        [incoming(CreatePoint(system_id=s, point_id="p", coordinates=(0, 0)), s) for s in systems]
    )
    step = (Translate(delta=(1, 0)),)
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for way in ("plain", "steady", "claimed"):
            started = time.process_time()
            for _ in range(BATCHES):
                batch = [
                    incoming(MovePoint(system_id=s, point_id="p", moves=step), s)
                    for s in (systems[k % SHARDS] for k in range(size))
                ]
                if way == "plain":
                    apply(batch)
                    continue
                apply_guarded(
                    store, cache, batch, applied=[], shards=SHARDS, stream=STREAM,
                    consumer="c", metrics=metrics, retention=86_400.0,
                    in_doubt=sys.maxsize if way == "claimed" else 0,
                )  # fmt: skip
            spent = (time.process_time() - started) / BATCHES * 1e6
            best[way] = min(best.get(way, spent), spent)
    store.dispose()
    print(f"batch of {size}: " + ", ".join(f"{w} {us:.0f} us" for w, us in best.items()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
