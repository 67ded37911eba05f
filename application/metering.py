"""Counting for the Metrics port: the upstream decorator that times and sizes every upstream request,
and how upstream and fill failures read as low-cardinality labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from application import errors
from application.ports import (BlobStorageUnavailable, Metrics, Upstream, UpstreamBlob, UpstreamManifest, UpstreamReferrers,
                               UpstreamManifestHead, UpstreamTarget)

T = TypeVar("T")


def upstream_outcome(error: Exception) -> str:
    """A failed upstream request as a label: its HTTP status class, or what went wrong without one."""
    if isinstance(error, errors.UpstreamTimeout):
        return "timeout"
    if isinstance(error, errors.UpstreamUnreachable):
        return "connect"
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return f"{status // 100}xx"
    if isinstance(error, (errors.UpstreamBadContent, errors.ManifestTooLarge)):
        return "bad_content"  # an answer came, but not a usable one (bad digest, too large, too many redirects)
    return "transport"        # any other connection-level failure (reset, protocol error)


def fill_failure(error: BaseException) -> str:
    """Why a blob fill failed, as a label."""
    if isinstance(error, errors.BlobCorrupt):
        return "corrupt"
    if isinstance(error, errors.BlobTruncated):
        return "truncated"
    if isinstance(error, errors.UpstreamNotFound):
        return "not_found"
    if isinstance(error, errors.UpstreamError):
        return "upstream"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, BlobStorageUnavailable):
        return "storage"      # storage could not keep it (full, or failing); the clients were still served
    return "other"            # e.g. the event store failed


class MeteredUpstream:
    """A decorator over the Upstream port: each request counted by kind and outcome, with its latency,
    and the bytes received. It sits inside UpstreamBackoff, so it sees only requests really sent:
    a call refused by the back-off never reaches upstream and is not counted here."""

    def __init__(self, upstream: Upstream, metrics: Metrics) -> None:
        self._upstream = upstream
        self._metrics = metrics

    async def _timed(self, target: UpstreamTarget, kind: str, call: Callable[[], Awaitable[T]]) -> T:
        # perf_counter, not the Clock port: a latency needs a monotonic timer, not the time of day.
        start = time.perf_counter()
        try:
            result = await call()
        except Exception as error:
            self._metrics.upstream_answered(target.org, kind, upstream_outcome(error), time.perf_counter() - start)
            raise
        self._metrics.upstream_answered(target.org, kind, "2xx", time.perf_counter() - start)
        return result

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest:
        manifest = await self._timed(target, "manifest",
                                     lambda: self._upstream.get_manifest(target, reference, accept))
        self._metrics.bytes_fetched(target.org, "manifest", len(manifest.content))
        return manifest

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead:
        return await self._timed(target, "head", lambda: self._upstream.head_manifest(target, reference, accept))

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        return await self._timed(target, "head", lambda: self._upstream.head_blob(target, digest))

    async def open_blob(self, target: UpstreamTarget, digest: str) -> UpstreamBlob:
        """Timed until upstream answers with headers; the body's bytes are counted as they arrive."""
        blob = await self._timed(target, "blob", lambda: self._upstream.open_blob(target, digest))
        return CountedBlob(blob, lambda size: self._metrics.bytes_fetched(target.org, "blob", size))

    async def list_tags(self, target: UpstreamTarget) -> list[str]:
        return await self._timed(target, "tags", lambda: self._upstream.list_tags(target))

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        return await self._timed(target, "referrers", lambda: self._upstream.get_referrers(target, digest))

    async def aclose(self) -> None:
        await self._upstream.aclose()


class CountedBlob:
    """An UpstreamBlob whose chunks are counted as they arrive (a fill that fails midway counts what it got)."""

    def __init__(self, blob: UpstreamBlob, received: Callable[[int], None]) -> None:
        self._blob = blob
        self._received = received
        self.size = blob.size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._blob:
            self._received(len(chunk))
            yield chunk

    def blocking_chunks(self) -> Iterator[bytes] | None:
        """The inner blob's blocking body (for a worker thread), counted the same way; None without one."""
        offer = getattr(self._blob, "blocking_chunks", None)
        return None if offer is None else self._counted(offer())

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._received(len(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self._blob.aclose()
