"""Manifest bytes by digest: storage behind a bounded in-process LRU (manifests are immutable and small)."""

from __future__ import annotations

import logging

from cachetools import LRUCache

from application.ports import BlobNotFound, BlobStorageUnavailable, BlobStore

log = logging.getLogger(__name__)


class ManifestBytes:
    def __init__(self, store: BlobStore, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self._store = store
        self._budget = budget_bytes
        self._held: LRUCache[str, bytes] = LRUCache(maxsize=budget_bytes, getsizeof=len)  # bounded in bytes

    async def get(self, digest: str) -> bytes | None:
        content = self._held.get(digest)
        if content is not None:
            return content
        try:
            content = await self._store.get_bytes(digest)
        except BlobNotFound:
            return None
        self._hold(digest, content)
        return content

    async def put(self, digest: str, content: bytes) -> None:
        """Store and hold `content`. Storage that cannot take it (full, failing) does not fail the pull
        that fetched it: the bytes in hand are answered and held, and a later pull that finds them
        neither held nor stored fetches them again."""
        try:
            if await self._store.stat(digest) is None:
                await self._store.put_bytes(digest, content)
        except BlobStorageUnavailable as error:
            log.warning("manifest %s not stored: %s", digest, error)
        self._hold(digest, content)

    def _hold(self, digest: str, content: bytes) -> None:
        if len(content) <= self._budget and digest not in self._held:  # cachetools refuses larger items
            self._held[digest] = content

    @property
    def held_bytes(self) -> int:
        return self._held.currsize
