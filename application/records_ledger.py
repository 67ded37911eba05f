"""The Ledger port over CacheRecords (the event store): each record written in a worker thread, with a bounded wait."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.to_thread

from application.errors import EntrepotError, EventStoreUnavailable
from application.cache_records import CacheRecords
from domain.referrers import Referrer

log = logging.getLogger(__name__)


class RecordsLedger:
    def __init__(self, records: CacheRecords, timeout: float = 5.0) -> None:
        self._records = records
        self._timeout = timeout

    async def manifest_cached(self, org: str, repository: str, digest: str, media_type: str, size: int,
                              blobs: list[str], children: list[str], at: float, tag: str | None = None,
                              referrer: Referrer | None = None, sizes: dict[str, int] | None = None) -> None:
        await self._write("a cached manifest", lambda: self._records.record_manifest(
            org, repository, digest, media_type, size, list(blobs), list(children), at, tag=tag, referrer=referrer,
            sizes=sizes))

    async def tag_checked(self, org: str, repository: str, tag: str, digest: str, media_type: str,
                          at: float) -> None:
        await self._write("a checked tag",
                          lambda: self._records.record_tag(org, repository, tag, digest, media_type, at))

    async def referrers_listed(self, org: str, repository: str, subject: str, descriptors: list[dict], at: float,
                               shown: bool) -> None:
        await self._write("a referrers list", lambda: self._records.record_referrers(
            org, repository, subject, descriptors, at, shown))

    async def blob_cached(self, org: str, repository: str, digest: str, size: int, at: float,
                          generation: int = 1) -> None:
        await self._write("a cached blob",
                          lambda: self._records.record_blob(org, repository, digest, size, at, generation))

    async def blob_corrupt(self, org: str, repository: str, digest: str, reason: str, at: float) -> None:
        await self._write("a corrupt blob",
                          lambda: self._records.record_corruption(org, repository, digest, reason, at))

    async def _write(self, what: str, write: Callable[[], None]) -> None:
        try:
            with anyio.fail_after(self._timeout):
                # abandon_on_cancel: past the deadline the client is answered; the write ends on its own.
                await anyio.to_thread.run_sync(write, abandon_on_cancel=True)
        except TimeoutError:
            raise EventStoreUnavailable(f"the event store did not record {what} within {self._timeout:g}s") from None
        except EntrepotError:
            raise
        except Exception as error:
            log.warning("recording %s failed: %s", what, error)
            raise EventStoreUnavailable(f"the event store could not record {what}: "
                                        f"{type(error).__name__}") from error
