"""Manifest bytes by digest: storage behind a small in-process LRU (manifests are immutable and small)."""

from __future__ import annotations

from collections import OrderedDict

from application.ports import BlobNotFound, BlobStore


class ManifestBytes:
    def __init__(self, store: BlobStore, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self._store = store
        self._budget = budget_bytes
        self._used = 0
        self._lru: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, digest: str) -> bytes | None:
        content = self._lru.get(digest)
        if content is not None:
            self._lru.move_to_end(digest)
            return content
        try:
            content = await self._store.get_bytes(digest)
        except BlobNotFound:
            return None
        self._remember(digest, content)
        return content

    async def put(self, digest: str, content: bytes) -> None:
        if await self._store.stat(digest) is None:
            await self._store.put_bytes(digest, content)
        self._remember(digest, content)

    def forget(self, digest: str) -> None:
        content = self._lru.pop(digest, None)
        if content is not None:
            self._used -= len(content)

    def _remember(self, digest: str, content: bytes) -> None:
        if digest in self._lru:
            return
        self._lru[digest] = content
        self._used += len(content)
        while self._used > self._budget and self._lru:
            _, old = self._lru.popitem(last=False)
            self._used -= len(old)
