"""The what-if simulator (pure): recorded pulls replayed through an eviction policy under a quota.

It keeps what the retention view keeps for each image (held, last use, pull count, LFU score, the
digests it references) and plans evictions with the quota feature's own functions
(`plan_eviction`, `low_watermark`, `eviction_key`, `pull_weight`, `add_weight`), so that its LRU and
LFU results are what the evictor would have done on the same pulls: an eviction check after each
miss (a fill nudges the evictor), images bigger than the quota never kept, pinned images never taken.

GDSF (Greedy-Dual-Size-Frequency, Cherkasova 1998) is offered only here: an image's priority is
`L + pulls since cached / bytes` (cost 1 per miss: it favours keeping many small images, which is
what a manifest hit ratio rewards), and `L` rises to the priority of each victim, so that images
which stopped being pulled age out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from domain.retention import (NO_PULLS, ORDER_TIEBREAK, Candidate, add_weight, eviction_key, low_watermark,
                              plan_eviction, pull_weight)

POLICIES = ("lru", "lfu", "gdsf")

ImageKey = tuple[str, str, str]   # (org, repository, manifest digest)


class UnknownPolicy(ValueError):
    """A policy the simulator does not offer."""


@dataclass(frozen=True)
class RecordedPull:
    """One pull that served content (hit, miss, stale, revalidated): what the retention view counts."""
    org: str
    repository: str
    digest: str
    at: float


@dataclass(frozen=True)
class Catalog:
    """What caching each image stores: {image: {digest: size}} (its manifest, children, configs and layers),
    and which index a platform manifest belongs to (a pull of the child is a pull inside its image)."""
    images: dict[ImageKey, dict[str, int]]
    parents: dict[ImageKey, str] = field(default_factory=dict)

    def image_of(self, key: ImageKey) -> ImageKey:
        parent = self.parents.get(key)
        return (key[0], key[1], parent) if parent is not None else key


@dataclass
class _Image:
    """An images row of the retention view, plus GDSF's own figures."""
    org: str
    repository: str
    digest: str
    members: dict[str, int]
    held: bool = False
    last_used: float = 0.0
    pull_count: int = 0
    score: float = NO_PULLS
    pinned: bool = False
    hits_since_cached: int = 0     # GDSF's frequency: it starts again when the image is cached again
    priority: float = 0.0          # GDSF's H

    @property
    def key(self) -> ImageKey:
        return self.org, self.repository, self.digest

    @property
    def bytes(self) -> int:
        return sum(self.members.values())


@dataclass(frozen=True)
class Outcome:
    policy: str
    pulls: int              # pulls replayed (pulls of images the catalog does not know are left out)
    hits: int
    upstream_bytes: int     # bytes a miss fetched: the image's digests that no held image already had
    evictions: int
    evicted: list[ImageKey]  # in the order they were evicted
    skipped: int            # pulls of images the catalog does not know

    @property
    def hit_ratio(self) -> float | None:
        return round(self.hits / self.pulls, 4) if self.pulls else None


def simulate(pulls: Iterable[RecordedPull], catalog: Catalog, quota: int, policy: str,
             pinned: frozenset[ImageKey] = frozenset()) -> Outcome:
    """Replay `pulls` (in the order recorded) through `policy` with an org quota of `quota` bytes (0: none)."""
    if policy not in POLICIES:
        raise UnknownPolicy(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    cache = _Cache(catalog, quota, policy, pinned)
    for pull in pulls:
        cache.pull(pull)
    return Outcome(policy, cache.pulls, cache.hits, cache.upstream_bytes, len(cache.evicted), cache.evicted,
                   cache.skipped)


def gdsf_key(image: _Image) -> tuple:
    return (image.priority, image.last_used, *(getattr(image, name) for name in ORDER_TIEBREAK))


class _Cache:
    def __init__(self, catalog: Catalog, quota: int, policy: str, pinned: frozenset[ImageKey]) -> None:
        self.catalog, self.quota, self.policy, self.pinned = catalog, quota, policy, pinned
        self.key = gdsf_key if policy == "gdsf" else eviction_key(policy)
        self.images: dict[ImageKey, _Image] = {}
        self.refs: dict[str, int] = {}     # digest -> held images referencing it (shared layers count once)
        self.usage = 0
        self.inflation = 0.0               # GDSF's L
        self.pulls = self.hits = self.upstream_bytes = self.skipped = 0
        self.evicted: list[ImageKey] = []

    def row(self, key: ImageKey) -> _Image:
        if key not in self.images:
            self.images[key] = _Image(*key, members=self.catalog.images.get(key, {}), pinned=key in self.pinned)
        return self.images[key]

    def pull(self, pull: RecordedPull) -> None:
        pulled = (pull.org, pull.repository, pull.digest)
        image_key = self.catalog.image_of(pulled)
        if image_key not in self.catalog.images:
            self.skipped += 1
            return
        image = self.row(image_key)
        self.pulls += 1
        if image.held:
            self.hits += 1
        else:
            self._cache(image, pull.at)
            # The fill nudges the evictor as soon as the manifest is recorded, before the pull itself is
            # (it is recorded when the answer goes out): the round ranks the image without this pull.
            # For a first cache that changes nothing (the view counts the caching as a provisional pull);
            # an image cached again ranks by its pulls before its eviction until this one is counted.
            self._evict()
        # The pull counts on the row of the digest pulled, as in the retention view (a platform
        # manifest pulled by digest has its own row, never ranked).
        self._count(self.row(pulled), pull.at)

    def _cache(self, image: _Image, at: float) -> None:
        for digest, size in image.members.items():
            if self.refs.get(digest, 0) == 0:
                self.upstream_bytes += size
                self.usage += size
            self.refs[digest] = self.refs.get(digest, 0) + 1
        image.held, image.hits_since_cached = True, 0
        image.last_used = max(image.last_used, at)
        if image.pull_count == 0:
            image.score = pull_weight(at)
        image.priority = self.inflation + 1 / max(image.bytes, 1)   # GDSF: as if this pull were counted

    def _count(self, row: _Image, at: float) -> None:
        row.last_used = max(row.last_used, at)
        row.score = pull_weight(at) if row.pull_count == 0 else add_weight(row.score, pull_weight(at))
        row.pull_count += 1
        row.hits_since_cached += 1
        row.priority = self.inflation + row.hits_since_cached / max(row.bytes, 1)

    def _evict(self) -> None:
        if not self.quota:
            return
        held = [image for image in self.images.values() if image.held and not image.pinned]
        forced = [self._candidate(image) for image in held if image.bytes > self.quota]
        if self.usage <= self.quota and not forced:
            return
        ranked = (self._candidate(image) for image in sorted(held, key=self.key))
        victims, _ = plan_eviction(self.usage, low_watermark(self.quota), ranked, forced)
        for victim in victims:
            image = self.images[(victim.candidate.org, victim.candidate.repository, victim.candidate.digest)]
            image.held = False
            for digest, size in image.members.items():
                self.refs[digest] -= 1
                if self.refs[digest] == 0:
                    self.usage -= size
            self.inflation = max(self.inflation, image.priority)
            self.evicted.append(image.key)

    def _candidate(self, image: _Image) -> Candidate:
        return Candidate(image.org, image.repository, image.digest,
                         {digest: (size, self.refs.get(digest, 0)) for digest, size in image.members.items()})
