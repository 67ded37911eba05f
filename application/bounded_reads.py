"""Read-model and event-store reads of the request path, each in a worker thread with a bounded wait."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from application.errors import ReadModelUnavailable
from application.ports import ManifestRow, RecordedReferrers, ReferrersRead, TagRow, TagsAndManifests
from domain.referrers import Descriptor

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class KnownReferrers:
    held: list[Descriptor]                 # the manifests with that subject this org's cache holds
    upstream: RecordedReferrers | None     # the list upstream gave last, as recorded


class BoundedReads:
    """The view (and the event store's holds-blob check) as the event loop may use them: never waited
    on in the loop itself, never longer than `timeout` seconds, and any failure is ReadModelUnavailable
    (503), not a 500 — so with PostgreSQL down, liveness and in-process answers carry on."""

    def __init__(self, view: TagsAndManifests, holds_blob: Callable[[str, str, int], bool], timeout: float = 3.0,
                 max_in_flight: int = 32, referrers: ReferrersRead | None = None) -> None:
        self._view = view
        self._holds_blob = holds_blob
        self._referrers = referrers
        self.timeout = timeout
        # Threads still reading, including those we stopped waiting for: with a hung database each
        # would hold a worker thread until its connection gives up, so past the bound we fail fast.
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._lock = threading.Lock()

    async def tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        return await self._read("a tag", self._view.get_tag, org, repository, tag)

    async def manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        return await self._read("a manifest", self._view.get_manifest, org, repository, digest)

    async def tags(self, org: str, repository: str) -> list[str]:
        return await self._read("the tag list", self._view.list_tags, org, repository)

    async def referrers(self, org: str, repository: str, subject: str) -> KnownReferrers:
        """What the referrers view knows of `subject`, both parts in one read (one worker thread hop);
        nothing when no referrers view is wired."""
        if self._referrers is None:
            return KnownReferrers([], None)
        view = self._referrers

        def both(*key: str) -> KnownReferrers:
            return KnownReferrers(view.referrers(*key), view.upstream_list(*key))
        return await self._read("the referrers", both, org, repository, subject)

    async def holds_blob(self, org: str, digest: str, generation: int = 1) -> bool:
        return await self._read("which blobs the org holds", self._holds_blob, org, digest, generation)

    async def _read(self, what: str, read: Callable[..., T], *args) -> T:
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                raise ReadModelUnavailable(f"{self._in_flight} database reads are still unanswered; "
                                           f"not starting another ({what})")
            self._in_flight += 1

        def counted() -> T:
            try:
                return read(*args)
            finally:
                with self._lock:
                    self._in_flight -= 1
        try:
            with anyio.fail_after(self.timeout):
                # abandon_on_cancel: at the deadline we answer; the thread finishes (or fails) on its own.
                return await anyio.to_thread.run_sync(counted, abandon_on_cancel=True)
        except TimeoutError:
            raise ReadModelUnavailable(f"the database did not answer reading {what} within "
                                       f"{self.timeout:g}s") from None
        except Exception as error:
            log.warning("reading %s failed: %s", what, error)
            raise ReadModelUnavailable(f"the database could not be read ({what}): "
                                       f"{type(error).__name__}") from error
