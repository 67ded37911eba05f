"""What the cache keeps: pins, flushes, stored blobs' deletion, and the pure eviction policy (scores, planning)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import chain
from dataclasses import dataclass, field
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

LOW_WATERMARK = 0.9                  # over quota, evict down to 90 % of it, so eviction does not run at every pull
LFU_HALF_LIFE_SECONDS = 7 * 86400    # LFU: a pull counts half as much a week later
SYSTEM_EVICTOR = "system:evictor"
NO_PULLS = -1e18                     # the LFU score of an image never pulled: below any real one
REASONS = ("quota", "capacity", "flush", "oversize")
# The eviction order of each policy: these columns of an image's stats ascending, then its name. The
# retention view's ranking query and the what-if simulator (domain/what_if.py) both read it.
EVICTION_ORDER = {"lru": ("last_used",), "lfu": ("score", "last_used")}
ORDER_TIEBREAK = ("org", "repository", "digest")


def eviction_order(policy: str) -> tuple[str, ...]:
    """The columns an image is ranked by under `policy` (anything but lru ranks as lfu, as configured orgs do)."""
    return (*EVICTION_ORDER["lru" if policy == "lru" else "lfu"], *ORDER_TIEBREAK)


def eviction_key(policy: str) -> Callable[[object], tuple]:
    """Sort key over objects with the stats attributes: the same order as the ranking query."""
    names = eviction_order(policy)
    return lambda image: tuple(getattr(image, name) for name in names)


def pull_weight(at: float) -> float:
    """A pull's weight in log2 space: log2(2 ** (at / half-life)). Newer pulls weigh more."""
    return at / LFU_HALF_LIFE_SECONDS


def add_weight(score: float | None, weight: float) -> float:
    """log2(2**score + 2**weight) without overflow: the LFU score of all pulls so far, older ones decayed."""
    if score is None:
        return weight
    high, low = max(score, weight), min(score, weight)
    if high - low > 60:
        return high
    return high + math.log2(1 + 2 ** (low - high))


class ImagePin(Aggregate):
    """An admin's pin on an image (org, repository, manifest digest): a pinned image is never evicted."""

    class Pinned(Aggregate.Created):
        org: str
        repository: str
        digest: str
        tag: str          # the tag named when pinning ("" when pinned by digest)
        actor: str
        at: float

    class Repinned(Aggregate.Event):
        org: str
        repository: str
        digest: str
        tag: str
        actor: str
        at: float

    class Unpinned(Aggregate.Event):
        org: str
        repository: str
        digest: str
        actor: str
        at: float

    @staticmethod
    def create_id(org: str, repository: str, digest: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:pin:{org}/{repository}@{digest}")

    @event(Pinned)
    def __init__(self, org: str, repository: str, digest: str, tag: str, actor: str, at: float) -> None:
        self.org, self.repository, self.digest, self.pinned = org, repository, digest, True

    def pin(self, tag: str, actor: str, at: float) -> None:
        if not self.pinned:
            self._repinned(org=self.org, repository=self.repository, digest=self.digest, tag=tag, actor=actor, at=at)

    @event(Repinned)
    def _repinned(self, org, repository, digest, tag, actor, at) -> None:
        self.pinned = True

    def unpin(self, actor: str, at: float) -> None:
        if self.pinned:
            self._unpinned(org=self.org, repository=self.repository, digest=self.digest, actor=actor, at=at)

    @event(Unpinned)
    def _unpinned(self, org, repository, digest, actor, at) -> None:
        self.pinned = False


class CacheFlush(Aggregate):
    """An admin's flush of an org, a repository or a tag (fresh id, one event); a dry run is recorded too."""

    class Flushed(Aggregate.Created):
        org: str
        repository: str
        tag: str
        dry_run: bool
        images: int
        tags: int
        blobs: int
        bytes: int
        actor: str
        at: float

    @event(Flushed)
    def __init__(self, org: str, repository: str, tag: str, dry_run: bool, images: int, tags: int, blobs: int,
                 bytes: int, actor: str, at: float) -> None:
        self.org, self.repository, self.tag, self.dry_run = org, repository, tag, dry_run


class StoredBlob(Aggregate):
    """Bytes in storage by digest, shared by every org: their deletion once no image references them.

    `Orphaned` is recorded before storage is touched, `Deleted` once storage gave the space back.
    A restart finds Orphaned-without-Deleted in the retention view and finishes the deletion.
    """

    class Tracked(Aggregate.Created):
        digest: str

    class Orphaned(Aggregate.Event):
        digest: str
        size: int
        unreferenced_since: float
        actor: str
        at: float

    class Deleted(Aggregate.Event):
        digest: str
        size: int
        actor: str
        at: float

    class Restored(Aggregate.Event):
        """Fetched and stored again after its deletion (a GET of the blob alone, no image cached again)."""
        digest: str
        size: int
        at: float

    @staticmethod
    def create_id(digest: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:stored-blob:{digest}")

    @event(Tracked)
    def __init__(self, digest: str) -> None:
        self.digest, self.orphaned, self.deleted = digest, False, False

    def orphan(self, size: int, unreferenced_since: float, actor: str, at: float) -> None:
        if not self.orphaned:
            self._orphaned(digest=self.digest, size=size, unreferenced_since=unreferenced_since, actor=actor, at=at)

    @event(Orphaned)
    def _orphaned(self, digest, size, unreferenced_since, actor, at) -> None:
        self.orphaned, self.size = True, size

    def delete(self, actor: str, at: float) -> None:
        if self.orphaned:
            self._deleted(digest=self.digest, size=self.size, actor=actor, at=at)

    @event(Deleted)
    def _deleted(self, digest, size, actor, at) -> None:
        self.orphaned, self.deleted = False, True

    def restore(self, size: int, at: float) -> None:
        if self.deleted:
            self._restored(digest=self.digest, size=size, at=at)

    @event(Restored)
    def _restored(self, digest, size, at) -> None:
        self.deleted = False


# -- planning an eviction (pure) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A cached image in eviction order, with what it references: {digest: (size, images referencing it)}.

    `refs` counts the held images in the eviction's scope (the org for a quota, every org for capacity).
    """

    org: str
    repository: str
    digest: str
    members: dict[str, tuple[int, int]]
    tags: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Victim:
    candidate: Candidate
    freed: int                 # bytes the scope's usage loses with it
    freed_digests: list[str]


def plan_eviction(usage: int, target: int, candidates: Iterable[Candidate],
                  forced: Iterable[Candidate] = ()) -> tuple[list[Victim], int]:
    """Take the forced candidates, then candidates in order until usage is at or under target.

    A digest frees its bytes only when the last image in scope referencing it goes (a shared
    layer counts once). Returns the victims and the usage they leave.
    """
    victims: list[Victim] = []
    gone: dict[str, int] = {}
    chosen: set[tuple[str, str, str]] = set()
    for is_forced, candidate in chain(((True, c) for c in forced), ((False, c) for c in candidates)):
        key = (candidate.org, candidate.repository, candidate.digest)
        if key in chosen:
            continue
        if not is_forced and usage <= target:
            break
        chosen.add(key)
        freed, digests = 0, []
        for digest, (size, refs) in candidate.members.items():
            gone[digest] = gone.get(digest, 0) + 1
            if gone[digest] >= refs:
                freed += size
                digests.append(digest)
        usage -= freed
        victims.append(Victim(candidate, freed, digests))
    return victims, usage


def low_watermark(limit: int) -> int:
    return int(limit * LOW_WATERMARK)
