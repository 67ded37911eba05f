"""What-if: an org's recorded pulls replayed through eviction policies under a quota, beside what really happened.

The pulls come from the audit view, what each image stores from the Registry's own events (the
retention view forgets an evicted image's digests; the events keep them), and the replay is
domain/what_if.py, which plans with the quota feature's own functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from eventsourcing.utils import get_topic

from application.admin import InvalidRequest
from application.errors import OrgUnknown
from domain.cache import CachedBlob, CachedManifest
from domain.org_settings import MAX_QUOTA
from domain.what_if import POLICIES, Catalog, Outcome, RecordedPull, simulate

SERVED = ("hit", "miss", "stale", "revalidated")      # the pulls the retention view counts
FROM_CACHE = ("hit", "stale", "revalidated")
PAGE = 1000
MAX_EVICTED = 100
_CACHED_TOPICS = [get_topic(CachedManifest.Cached), get_topic(CachedManifest.Recached), get_topic(CachedBlob.Cached)]


class WhatIfReads(Protocol):
    """The views the simulator reads: the audit view's query, the retention view's log and pins."""

    def audit(self, org: str, since: float | None, after_id: int | None, limit: int) -> list[Any]: ...
    def evictions_since(self, org: str, since: float | None) -> list[str]:
        """The org's evictions at or after since, oldest first, as "repository@digest"."""
    def pinned(self, org: str) -> list[tuple[str, str, str]]: ...
    def upstream_bytes(self, org: str, since: float | None) -> int | None: ...


class ViewReads:
    """WhatIfReads over the audit view, the retention view and the analytics use case."""

    def __init__(self, audit_view: Any, retention_view: Any, analytics: Any) -> None:
        self._audit, self._retention, self._analytics = audit_view, retention_view, analytics

    def audit(self, org: str, since: float | None, after_id: int | None, limit: int) -> list[Any]:
        return self._audit.query(org=org, since=since, after_id=after_id, limit=limit)

    def evictions_since(self, org: str, since: float | None) -> list[str]:
        found, before = [], None
        while True:   # newest first: stop at the first one before `since`
            entries = self._retention.log(org=org, kind="eviction", before=before, limit=PAGE)
            for entry in entries:
                if since is not None and entry.at < since:
                    return found[::-1]
                found.append(f"{entry.repository}@{entry.digest}")
            if len(entries) < PAGE:
                return found[::-1]
            before = entries[-1].id

    def pinned(self, org: str) -> list[tuple[str, str, str]]:
        return [(image.org, image.repository, image.digest) for image in self._retention.pinned(org)]

    def upstream_bytes(self, org: str, since: float | None) -> int | None:
        """From the traffic reports (every [analytics] traffic_interval_seconds): the last minutes may be missing."""
        if since is None:
            return None
        try:
            return self._analytics.summary(org, since=since)["bytes_from_upstream"]
        except InvalidRequest:   # since is not before now: no traffic to report
            return None


@dataclass(frozen=True)
class PolicyFigures:
    policy: str
    pulls: int
    hits: int
    hit_ratio: float | None
    upstream_bytes: int | None
    evictions: int
    evicted: list[str]      # the first MAX_EVICTED images evicted, "repository@digest", in order

    @classmethod
    def of(cls, outcome: Outcome) -> PolicyFigures:
        return cls(outcome.policy, outcome.pulls, outcome.hits, outcome.hit_ratio, outcome.upstream_bytes,
                   outcome.evictions, [f"{repository}@{digest}" for _, repository, digest in outcome.evicted[:MAX_EVICTED]])


@dataclass(frozen=True)
class WhatIfReport:
    org: str
    quota_bytes: int
    since: float | None
    recorded: PolicyFigures        # what really happened (policy: the org's own, "recorded")
    simulated: list[PolicyFigures]
    unknown_pulls: int             # pulls of images no cached-manifest event describes: left out

    def as_dict(self) -> dict:
        return asdict(self)


class WhatIf:
    def __init__(self, reads: WhatIfReads, registry: Any, org_known: Callable[[str], bool],
                 now: Callable[[], float]) -> None:
        self._reads, self._registry, self._org_known, self.now = reads, registry, org_known, now

    def simulate(self, org: str, quota_bytes: int, policies: list[str], since: float | None = None) -> WhatIfReport:
        if not self._org_known(org):
            raise OrgUnknown(f"no organization named {org!r}")
        unknown = [p for p in policies if p not in POLICIES]
        if unknown or not policies:
            raise InvalidRequest(f"policies must be some of {', '.join(POLICIES)}",
                                 {"policies": f"unknown: {', '.join(unknown) or '(none given)'}"})
        if not 0 <= quota_bytes <= MAX_QUOTA:
            raise InvalidRequest("quota_bytes out of range", {"quota_bytes": f"0 to {MAX_QUOTA}"})
        pulls, hits = [], 0
        for row in self._served(org, since):
            pulls.append(RecordedPull(row.org, row.repository, row.digest, row.at))
            hits += row.result in FROM_CACHE
        catalog = registry_catalog(self._registry, org)
        pinned = frozenset(self._reads.pinned(org))
        outcomes = [simulate(pulls, catalog, quota_bytes, policy, pinned) for policy in dict.fromkeys(policies)]
        first = since if since is not None else (pulls[0].at if pulls else None)
        evicted = self._reads.evictions_since(org, since)
        recorded = PolicyFigures("recorded", len(pulls), hits, round(hits / len(pulls), 4) if pulls else None,
                                 self._reads.upstream_bytes(org, first), len(evicted), evicted[:MAX_EVICTED])
        return WhatIfReport(org, quota_bytes, since, recorded, [PolicyFigures.of(o) for o in outcomes],
                            outcomes[0].skipped if outcomes else 0)

    def _served(self, org: str, since: float | None) -> Iterator[Any]:
        after = None
        while True:
            rows = self._reads.audit(org, since, after, PAGE)
            yield from (row for row in rows if row.digest and row.result in SERVED)
            if len(rows) < PAGE:
                return
            after = rows[-1].id


def registry_catalog(registry: Any, org: str, page_size: int = 5000) -> Catalog:
    """What caching each of the org's images stored, from CachedManifest and CachedBlob events.

    Read in pages over the Registry's notification log, filtered to those topics (public recorder API).
    """
    manifests: dict[tuple[str, str, str], Any] = {}
    sizes: dict[str, int] = {}
    position = 0
    while True:
        page = registry.recorder.select_notifications(start=position, limit=page_size, topics=_CACHED_TOPICS,
                                                      inclusive_of_start=False)
        for notification in page:
            event = registry.mapper.to_domain_event(notification)
            if event.org != org:
                continue
            sizes[event.digest] = event.size
            if not isinstance(event, CachedBlob.Cached):
                manifests[(event.org, event.repository, event.digest)] = event
                for digest, size in (event.sizes or {}).items():
                    sizes.setdefault(digest, size)
        if len(page) < page_size:
            break
        position = page[-1].id
    parents = {(key[0], key[1], child): key[2] for key, event in manifests.items() for child in event.children}
    images: dict[tuple[str, str, str], dict[str, int]] = {}
    for key, event in manifests.items():
        if key in parents:
            continue
        digests = [event.digest, *event.blobs, *event.children]
        for child in event.children:
            if (found := manifests.get((key[0], key[1], child))) is not None:
                digests += found.blobs
        images[key] = {digest: sizes.get(digest, 0) for digest in dict.fromkeys(digests)}
    return Catalog(images, parents)
