"""The per-pod cache: bounded, and never stale across shard moves."""

from __future__ import annotations

from coordshard_client.messages import Point, System
from coordshard_service.cache import Cache


def _point(system: str, pid: str, version: int = 1) -> Point:
    return Point(system_id=system, point_id=pid, coordinates=(0.0, 0.0), version=version)


def test_lru_evicts_the_least_recently_used() -> None:
    cache = Cache(2)
    cache.put_point(_point("s", "a"), shard=0)
    cache.put_point(_point("s", "b"), shard=0)
    assert cache.point("s", "a") is not None  # a is now the newest
    cache.put_point(_point("s", "c"), shard=0)
    assert cache.point("s", "b") is None and cache.point("s", "a") is not None
    assert len(cache) == 2


def test_retain_drops_shards_that_left() -> None:
    cache = Cache(10)
    cache.put_system(System(system_id="s", name="s", dimension=2, units="m"), shard=1)
    cache.put_point(_point("s", "a"), shard=1)
    cache.put_point(_point("t", "a"), shard=2)
    assert cache.retain([2]) == [1]
    assert cache.system("s") is None and cache.point("s", "a") is None
    assert cache.point("t", "a") is not None and cache.shards() == {2}


def test_a_changed_store_mark_invalidates_the_shard() -> None:
    cache = Cache(10)
    cache.validate(3, 10)
    cache.put_point(_point("s", "a", version=4), shard=3)
    cache.advance(3, 12)
    cache.validate(3, 12)  # nobody else wrote: kept
    assert cache.point("s", "a") is not None
    cache.validate(3, 15)  # another pod applied commands meanwhile: dropped
    assert cache.point("s", "a") is None


def test_deleting_a_system_forgets_its_points() -> None:
    cache = Cache(10)
    cache.put_point(_point("s", "a"), shard=0)
    cache.forget("s")
    assert cache.point("s", "a") is None and len(cache) == 0
