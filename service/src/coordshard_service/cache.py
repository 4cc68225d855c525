"""The per-pod read cache of the systems and points of the shards this pod owns.

Never the source of truth: the store is. Two rules keep it from going stale
when shards move between pods:

- when a shard leaves the pod (its consumer filter no longer names it), every
  entry of that shard goes (``retain``);
- each shard remembers the store's high-water mark it last saw; if the mark
  in the store differs when the shard is next processed (another pod applied
  commands in between, e.g. the shard moved away and back between two looks
  at the consumer), the shard's entries are dropped first (``validate``).

Bounded LRU over systems and points together. Points are held as compact
tuples, not models, so 100k of them stay small. Not thread-safe: only the
batch thread touches it, and ``retain`` runs between batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from coordshard_client.messages import Point, System

__all__ = ["Cache"]

_SYSTEM = ""
"""The point-id slot of a system's own key (point ids are never empty)."""

_Key = tuple[str, str]
_Value = System | tuple[tuple[float, ...], int]


class Cache:
    """Bounded LRU keyed by (system id, point id); a system's key has point id ``""``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[_Key, _Value] = OrderedDict()
        self._keys_of_system: dict[str, set[_Key]] = {}
        self._systems_of_shard: dict[int, set[str]] = {}
        self._marks: dict[int, int] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    def shards(self) -> set[int]:
        """Shards that have entries."""
        return {s for s, ids in self._systems_of_shard.items() if ids}

    # -- coherence ----------------------------------------------------------

    def validate(self, shard: int, store_mark: int) -> None:
        """Drop the shard's entries unless the store's mark is the one we last saw."""
        if self._marks.get(shard) != store_mark:
            self.drop_shard(shard)
            self._marks[shard] = store_mark

    def advance(self, shard: int, mark: int) -> None:
        """Record the mark this pod just committed for the shard."""
        self._marks[shard] = mark

    def retain(self, shards: Iterable[int]) -> list[int]:
        """Keep only the given shards; return the shards whose entries were dropped."""
        keep = set(shards)
        gone = [s for s in list(self._systems_of_shard) + list(self._marks) if s not in keep]
        for shard in set(gone):
            self.drop_shard(shard)
        return sorted(set(gone))

    def drop_shard(self, shard: int) -> None:
        for system_id in self._systems_of_shard.pop(shard, set()):
            self.drop_system(system_id)
        self._marks.pop(shard, None)

    def drop_system(self, system_id: str) -> None:
        for key in self._keys_of_system.pop(system_id, set()):
            self._lru.pop(key, None)

    def clear(self) -> None:
        self._lru.clear()
        self._keys_of_system.clear()
        self._systems_of_shard.clear()
        self._marks.clear()

    # -- entries ------------------------------------------------------------

    def system(self, system_id: str) -> System | None:
        value = self._get((system_id, _SYSTEM))
        return value if isinstance(value, System) else None

    def point(self, system_id: str, point_id: str) -> Point | None:
        value = self._get((system_id, point_id))
        if value is None or isinstance(value, System):
            return None
        coordinates, version = value
        return Point.model_construct(
            system_id=system_id, point_id=point_id, coordinates=coordinates, version=version
        )

    def put_system(self, system: System, *, shard: int) -> None:
        self._put((system.system_id, _SYSTEM), system, shard=shard)

    def put_point(self, point: Point, *, shard: int) -> None:
        self._put(
            (point.system_id, point.point_id), (point.coordinates, point.version), shard=shard
        )

    def forget(self, system_id: str, point_id: str = _SYSTEM) -> None:
        """Remove one entry (a deleted point; a deleted system also loses its points)."""
        if point_id == _SYSTEM:
            self.drop_system(system_id)
            return
        key = (system_id, point_id)
        self._lru.pop(key, None)
        keys = self._keys_of_system.get(system_id)
        if keys is not None:
            keys.discard(key)

    def _get(self, key: _Key) -> _Value | None:
        value = self._lru.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._lru.move_to_end(key)
        return value

    def _put(self, key: _Key, value: _Value, *, shard: int) -> None:
        if self.capacity <= 0:
            return
        self._lru[key] = value
        self._lru.move_to_end(key)
        self._keys_of_system.setdefault(key[0], set()).add(key)
        self._systems_of_shard.setdefault(shard, set()).add(key[0])
        while len(self._lru) > self.capacity:
            old, _ = self._lru.popitem(last=False)
            keys = self._keys_of_system.get(old[0])
            if keys is not None:
                keys.discard(old)
