"""Which digest a tag points to, asked in one order: our own recent write, the in-process row,
the view, then the entry other replicas shared (Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

from application.bounded_reads import BoundedReads
from application.errors import ReadModelUnavailable
from application.ports import SharedTags, TagRow
from application.held_rows import HeldRows
from application.singleflight import SingleFlight

TagKey = tuple[str, str, str]  # (org, repository, tag)


class TagLookup:
    def __init__(self, reads: BoundedReads, shared: SharedTags | None = None, *, max_tags: int = 50_000,
                 row_seconds: float = 1.0, recent_seconds: float = 5.0, timer: Callable[[], float] = time.monotonic) -> None:
        self._reads = reads
        self._shared = shared  # None: one replica, nothing to share
        # View rows for a second: the warm path then costs no query, and another replica's move of
        # a tag is seen here at most that late.
        self._rows: HeldRows[TagKey, TagRow] = HeldRows(max_tags, ttl=row_seconds, timer=timer)
        # Our own tag writes, read before the projection catches up with them. Bounded in time too:
        # a tag whose image was evicted has no view row to replace it, and must stop answering
        # well within the blob deletion grace period.
        self._recent: TTLCache[TagKey, TagRow] = TTLCache(maxsize=max_tags, ttl=recent_seconds, timer=timer)
        self._view_reads: SingleFlight[TagRow | None] = SingleFlight()   # holds only reads in flight

    def held(self) -> dict[str, int]:
        return {"tag_rows": len(self._rows), "recent_tags": len(self._recent)}

    async def get(self, org: str, repository: str, tag: str) -> TagRow | None:
        key = (org, repository, tag)
        recent = self._recent.get(key)
        row = self._rows.fresh(key)
        if row is None:
            row = await self._from_view(key, recent)
        if recent is not None:
            if row is not None and row.checked_at >= recent.checked_at:
                self._recent.pop(key, None)  # the projection has caught up
            else:
                row = recent
        if self._shared is None:
            return row
        # Another replica's write that the read model has not caught up with yet: the newest wins.
        shared = await self._shared.get(org, repository, tag)
        return shared if shared is not None and (row is None or shared.checked_at > row.checked_at) else row

    async def _from_view(self, key: TagKey, recent: TagRow | None) -> TagRow | None:
        try:
            # Every pull of a tag whose held row just expired arrives here at once (once a second under
            # load): they share one read instead of one thread and query each, which was a spike in
            # the warm tag pull's p99 every `row_seconds`.
            row = await self._view_reads.run(key, lambda: self._reads.tag(*key))
        except ReadModelUnavailable:
            # The database is down: a row we hold, however old, still answers a warm pull (the
            # freshness policy then decides whether upstream is asked), like serve-stale for the view.
            held = self._rows.held(key)
            if held is None and recent is None:
                raise
            return held
        if row is not None:
            self._rows.put(key, row)
        return row

    def forget(self, org: str, repository: str | None = None) -> None:
        """An admin flushed the org (or one repository): its tags are asked of the view again at once."""
        def flushed(key: TagKey) -> bool:
            return key[0] == org and (repository is None or key[1] == repository)

        for key in [key for key in list(self._recent.keys()) if flushed(key)]:
            self._recent.pop(key, None)
        for key in [key for key in self._rows.keys() if flushed(key)]:
            self._rows.forget(key)

    async def shared(self, org: str, repository: str, tag: str) -> TagRow | None:
        return await self._shared.get(org, repository, tag) if self._shared else None

    async def remember(self, org: str, repository: str, tag: str, row: TagRow) -> None:
        """After our own write: this process reads it before the projection catches up."""
        key = (org, repository, tag)
        self._recent[key] = row
        self._rows.forget(key)
        if self._shared:  # replaces the entry: a moved tag is seen moved by every replica
            await self._shared.put(org, repository, tag, row)
