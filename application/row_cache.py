"""A small in-process cache of read-model rows, so a warm pull does not query the view every time."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RowCache(Generic[K, V]):
    """LRU with an optional time to live. Immutable rows (manifests by digest) need no TTL; tag rows
    get a short one, which bounds how late this replica sees a tag another replica moved."""

    def __init__(self, max_entries: int = 50_000, ttl: float | None = None) -> None:
        self._rows: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl

    def get(self, key: K) -> V | None:
        entry = self._rows.get(key)
        if entry is None:
            return None
        if self._ttl is not None and entry[0] < time.monotonic():
            del self._rows[key]
            return None
        self._rows.move_to_end(key)
        return entry[1]

    def put(self, key: K, row: V) -> None:
        expires = time.monotonic() + self._ttl if self._ttl is not None else 0.0
        self._rows[key] = (expires, row)
        self._rows.move_to_end(key)
        while len(self._rows) > self._max:
            self._rows.popitem(last=False)

    def forget(self, key: K) -> None:
        self._rows.pop(key, None)
