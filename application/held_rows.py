"""Read-model rows held in-process (bounded LRU), so a warm pull does not query the view every time."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class HeldRows(Generic[K, V]):
    """An LRU of rows, each fresh for `ttl` seconds (None: forever, for immutable rows).

    Not cachetools' TTLCache: an expired row is kept (until the LRU bound pushes it out) because it
    is still the best answer when the database is down — `held` returns it, `fresh` does not.
    """

    def __init__(self, max_entries: int = 50_000, ttl: float | None = None,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._rows: LRUCache[K, tuple[float, V]] = LRUCache(maxsize=max_entries)
        self._ttl = ttl
        self._timer = timer

    def fresh(self, key: K) -> V | None:
        """The row if it is younger than the TTL."""
        entry = self._rows.get(key)
        if entry is None or (self._ttl is not None and entry[0] < self._timer()):
            return None
        return entry[1]

    def held(self, key: K) -> V | None:
        """The row however old: what to serve when the view cannot be asked."""
        entry = self._rows.get(key)
        return None if entry is None else entry[1]

    def put(self, key: K, row: V) -> None:
        self._rows[key] = (self._timer() + self._ttl if self._ttl is not None else 0.0, row)

    def forget(self, key: K) -> None:
        self._rows.pop(key, None)

    def keys(self) -> list[K]:
        return list(self._rows.keys())

    def __len__(self) -> int:
        return len(self._rows)
