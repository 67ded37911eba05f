"""The Ledger port on the Registry (the event store): each record is written in a worker thread."""

from __future__ import annotations

import anyio.to_thread

from application.registry import Registry


class RegistryLedger:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def manifest_cached(self, org: str, repository: str, digest: str, media_type: str, size: int,
                              blobs: list[str], children: list[str], at: float, tag: str | None = None) -> None:
        await anyio.to_thread.run_sync(lambda: self._registry.record_manifest(
            org, repository, digest, media_type, size, list(blobs), list(children), at, tag=tag))

    async def tag_checked(self, org: str, repository: str, tag: str, digest: str, media_type: str,
                          at: float) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._registry.record_tag(org, repository, tag, digest, media_type, at))

    async def blob_cached(self, org: str, repository: str, digest: str, size: int, at: float) -> None:
        await anyio.to_thread.run_sync(lambda: self._registry.record_blob(org, repository, digest, size, at))

    async def blob_corrupt(self, org: str, repository: str, digest: str, reason: str, at: float) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._registry.record_corruption(org, repository, digest, reason, at))
