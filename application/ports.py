"""Ports: the small interfaces the application needs from the outside world.

Adapters live in infra/; unit tests use fakes (tests/unit/fakes.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from domain.referrers import Descriptor, Referrer


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""


@dataclass(frozen=True)
class UpstreamTarget:
    """Where one repository of an org lives upstream, and how to authenticate there."""

    org: str
    base_url: str            # e.g. "https://registry-1.docker.io" or "http://127.0.0.1:5001"
    repository: str          # the upstream repository path, namespace and library/ already applied
    username: str = ""
    password: str = ""
    allow_listed: bool = False   # the org's allow list names this repository (`pull_through = "allow-list"`)
    generation: int = 1          # which org of that name (see domain.org.CacheOrg.Recreated): what it holds is its own


@dataclass(frozen=True)
class RateLimit:
    """Upstream `ratelimit-limit` / `ratelimit-remaining` (Docker Hub: `100;w=21600`)."""

    limit: int | None
    remaining: int | None
    window_seconds: int | None = None


@dataclass(frozen=True)
class UpstreamManifest:
    content: bytes
    media_type: str
    digest: str                       # verified sha256 of `content`
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class UpstreamManifestHead:
    digest: str
    media_type: str
    size: int | None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class UpstreamReferrers:
    """An upstream's answer from its referrers API (OCI 1.1): every page, unfiltered."""

    descriptors: list[Descriptor]
    rate_limit: RateLimit | None = None


class UpstreamBlob(Protocol):
    """An open upstream blob response. Iterate its raw bytes once, then aclose() it (always).

    It may also offer `blocking_chunks()`: the same bytes as a blocking iterator for one worker thread,
    which a fill then uses with a spool's `append_blocking` (application/fills.py)."""

    size: int | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    """A registry client. Raises the application's Upstream* errors, nothing transport-specific."""

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest: ...

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead: ...

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        """Whether upstream holds the blob (its size when told); raises UpstreamNotFound when it does not."""

    async def open_blob(self, target: UpstreamTarget, digest: str) -> UpstreamBlob: ...

    async def list_tags(self, target: UpstreamTarget) -> list[str]: ...

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        """The upstream's referrers API answer; UpstreamNotFound (or UpstreamBadContent) when it has none."""

    async def aclose(self) -> None: ...


class Spool(Protocol):
    """A local temporary file a fill writes into while any number of readers read it as it grows.

    append() and discard() are async so that a backend may ship bytes elsewhere as they arrive
    (S3 uploads full parts while the fill runs, and aborts the upload on discard). A spool whose
    append is a local write may offer `append_blocking(chunk)` too, for a fill copying in a thread.
    """

    async def append(self, chunk: bytes) -> None: ...

    def read_at(self, offset: int, size: int) -> bytes: ...

    async def discard(self) -> None: ...

    def close(self) -> None:
        """Release what readers read through (the read fd) once none needs it."""


class BlobNotFound(Exception):
    """Raised by every BlobStore backend for a digest it does not hold."""


class BlobStorageUnavailable(Exception):
    """Raised by every BlobStore backend when storage fails for another reason than a missing blob."""


class BlobStorageFull(BlobStorageUnavailable):
    """Raised by every BlobStore backend when storage has no room left (ENOSPC, a quota): nothing new is
    kept until space is freed, though what is stored can still be read."""


class BlobStore(Protocol):
    """Content-addressed storage for blobs and manifests. Only verified content is ever published."""

    async def stat(self, digest: str) -> int | None:
        """Size of the published object, or None."""

    async def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of a published object; raises BlobNotFound."""

    def local_path(self, digest: str) -> str | None:
        """A filesystem path to the published object when the backend has one (for zero-copy sends)."""

    async def get_bytes(self, digest: str) -> bytes: ...

    async def put_bytes(self, digest: str, data: bytes) -> None:
        """Publish small content (manifests); the caller has verified `digest`."""

    def new_spool(self, digest: str) -> Spool:
        """A spool for the fill of `digest` (the digest is not verified yet)."""

    async def publish(self, digest: str, spool: Spool) -> None:
        """Atomically publish a fully written and verified spool under `digest`."""

    async def redirect_url(self, digest: str) -> str | None:
        """A URL clients may fetch the published object from directly (a presigned GET), or None."""

    async def room(self) -> int | None:
        """Bytes fills may still write before local free space falls below [storage] low_free_bytes
        (negative once under it; None: not bounded). A prefetch takes no more than this."""

    async def delete(self, digest: str) -> bool:
        """Remove a published object; False when it was not there (deleting twice is not an error).
        A send that already opened it finishes (filesystem: the open file outlives its name)."""


@dataclass(frozen=True)
class TagRow:
    digest: str
    media_type: str
    checked_at: float


@dataclass(frozen=True)
class ManifestRow:
    digest: str
    media_type: str
    size: int
    blobs: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


class TagsAndManifests(Protocol):
    """The read model the hot path consults (projections/)."""

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None: ...

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None: ...

    def list_tags(self, org: str, repository: str) -> list[str]: ...


class OrgRecord(Protocol):
    """An org as the orgs view holds it: its settings as the events recorded them (a dict)."""

    name: str
    settings: dict
    deleted: bool
    # and `generation: int` (1 when absent): which org of that name, see domain.org.CacheOrg.Recreated


class OrgsByName(Protocol):
    """The orgs view (projections/orgs.py), as OrgDirectory reads it: one org's row by name."""

    def get_org(self, name: str) -> OrgRecord | None: ...


class FillLock(Protocol):
    """The right to fetch one blob upstream for the whole cluster; kept alive until released."""

    async def release(self) -> None: ...


class FillCoordinator(Protocol):
    """Single-flight of blob fills across replicas that share blob storage.

    Every failure of the coordination backend degrades to in-process behaviour (claim() then
    grants the lock): Entrepôt gets slower, never wrong.
    """

    async def claim(self, digest: str) -> FillLock | None:
        """The lock to fetch `digest`, or None while another replica holds it."""

    async def wait_released(self, digest: str) -> bool:
        """Wait until the holder of `digest`'s lock releases it or dies (True), within a bounded time (False)."""


class SharedTags(Protocol):
    """A short-lived tag -> digest cache shared by replicas: read-your-writes across replicas while
    the read model catches up. Misses and backend failures answer None; a put replaces the entry."""

    async def get(self, org: str, repository: str, tag: str) -> TagRow | None: ...

    async def put(self, org: str, repository: str, tag: str, row: TagRow) -> None: ...

    async def forget(self, org: str, repository: str, tag: str) -> None: ...


class Metrics(Protocol):
    """What this process counts for Prometheus, per org. Labels stay low-cardinality: org, result,
    kind, outcome, reason — never a repository, tag or digest (infra/metrics.py)."""

    def manifest_pulled(self, org: str, result: str) -> None:
        """A manifest pull recorded for the audit log; `result` is the Pull's result, whatever its value."""

    def blob_pulled(self, org: str, result: str) -> None:
        """A blob GET answered: hit (from storage or a verified fill) or miss (streamed from a fill)."""

    def stale_served(self, org: str) -> None:
        """A manifest (GET or HEAD) served from the cache because upstream failed."""

    def bytes_served(self, org: str, kind: str, size: int, repository: str = "") -> None:
        """Bytes sent to clients; kind is "manifest" or "blob". `repository` (the client's) only feeds
        the analytics' top lists (application/traffic.py), never a Prometheus label."""

    def bytes_fetched(self, org: str, kind: str, size: int) -> None:
        """Bytes received from upstream; kind is "manifest" or "blob"."""

    def upstream_answered(self, org: str, kind: str, outcome: str, seconds: float) -> None:
        """One upstream request: kind manifest | blob | head | tags; outcome a status class ("2xx",
        "4xx", "5xx") or a failure without one ("timeout", "connect", "transport", "bad_content")."""

    def fill_started(self, org: str) -> None: ...

    def fill_completed(self, org: str, seconds: float = 0.0) -> None:
        """A fill verified and published, `seconds` after it started."""

    def fill_failed(self, org: str, reason: str) -> None:
        """reason: corrupt | truncated | not_found | upstream | storage (application.metering.fill_failure)."""

    def pulls_unrecorded(self, count: int, reason: str) -> None:
        """Pulls served but never recorded: reason backlog_full (the oldest kept pulls made room),
        queue_full (the writer hung with a full queue) or shutdown (the event store still down at exit)."""

    def pull_backlog(self, size: int) -> None:
        """How many served pulls are kept in memory until the event store takes writes again."""


class NoMetrics:
    """The Metrics port doing nothing: the default wherever no registry is wired (unit tests, tools)."""

    def manifest_pulled(self, org: str, result: str) -> None: pass

    def blob_pulled(self, org: str, result: str) -> None: pass

    def stale_served(self, org: str) -> None: pass

    def bytes_served(self, org: str, kind: str, size: int, repository: str = "") -> None: pass

    def bytes_fetched(self, org: str, kind: str, size: int) -> None: pass

    def upstream_answered(self, org: str, kind: str, outcome: str, seconds: float) -> None: pass

    def fill_started(self, org: str) -> None: pass

    def fill_completed(self, org: str, seconds: float = 0.0) -> None: pass

    def fill_failed(self, org: str, reason: str) -> None: pass

    def pulls_unrecorded(self, count: int, reason: str) -> None: pass

    def pull_backlog(self, size: int) -> None: pass


@dataclass(frozen=True)
class RecordedReferrers:
    """An upstream's referrers list of one subject as the referrers view holds it, and when upstream last said so."""

    descriptors: list[Descriptor]
    checked_at: float


class ReferrersRead(Protocol):
    """The referrers view (OCI 1.1): the cached manifests whose subject is a digest, and the lists upstream gave."""

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        """The manifests with that subject the cache holds now (not those evicted)."""

    def upstream_list(self, org: str, repository: str, subject: str) -> RecordedReferrers | None:
        """The list the upstream gave last, as recorded; None when none was (or a flush dropped it)."""


class Ledger(Protocol):
    """Where the cache records what it holds and what went wrong (the event store, in production).
    Fills and caches report here; nothing calls back into the cache."""

    async def manifest_cached(self, org: str, repository: str, digest: str, media_type: str, size: int,
                              blobs: list[str], children: list[str], at: float, tag: str | None = None,
                              referrer: Referrer | None = None, sizes: dict[str, int] | None = None) -> None:
        """A fetched manifest, and the tag it was fetched by, recorded together; `referrer` when
        the manifest has a subject (OCI 1.1); `sizes`: what its descriptors declare, so that a quota
        counts the image whole before its layers arrive."""

    async def tag_checked(self, org: str, repository: str, tag: str, digest: str, media_type: str,
                          at: float) -> None: ...

    async def referrers_listed(self, org: str, repository: str, subject: str, descriptors: list[dict], at: float,
                               shown: bool) -> None:
        """Upstream's referrers list of `subject` (descriptors as an index lists them); `shown`: the
        referrers view still shows the list recorded last (a flush or org delete drops it)."""

    async def blob_cached(self, org: str, repository: str, digest: str, size: int, at: float,
                          generation: int = 1) -> None:
        """A verified blob an org brought in; `generation`: which org of that name (CacheOrg.Recreated)."""

    async def blob_corrupt(self, org: str, repository: str, digest: str, reason: str, at: float) -> None: ...
