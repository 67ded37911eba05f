"""The referrers cache (OCI 1.1): the upstream's referrers list, cached like a tag, merged with every
manifest with that subject the cache itself holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cachetools import LRUCache, TLRUCache

from application.bounded_reads import BoundedReads
from application.errors import ManifestUnknown, UpstreamBadContent, UpstreamError, UpstreamNotFound
from application.manifests import ManifestCache
from application.orgs import OrgConfig
from application.ports import Clock, Upstream
from application.ratelimits import RateLimits
from application.singleflight import SingleFlight
from application.stale import failure_kind, stale_reason
from domain.manifest import OCI_INDEX, InvalidManifest
from domain.names import Digest, parse_reference
from domain.policy import Freshness, may_serve_stale, tag_freshness
from domain.pull import PullResult
from domain.referrers import Descriptor, fallback_tag, merged, read_referrers_index, referrers_index

log = logging.getLogger(__name__)
SubjectKey = tuple[str, str, str]  # (org, repository, subject digest)
UpstreamList = tuple[list[Descriptor], PullResult, "str | None"]   # descriptors, how they were had, warning
ONLY_OURS = "upstream unavailable and its list not held: listing only the referrers this cache holds"


@dataclass(frozen=True)
class ReferrersAnswer:
    descriptors: list[Descriptor]     # every referrer, unfiltered: the edge filters and pages
    result: PullResult
    warning: str | None = None

    @property
    def digest(self) -> str:
        """The digest of the whole list as an index: what the audit records as pulled."""
        return str(Digest.of(referrers_index(self.descriptors)))


@dataclass(frozen=True)
class _Held:
    descriptors: list[Descriptor]
    checked_at: float


class ReferrersCache:
    """Upstream first, through its referrers API when it has one, else through its fallback tag
    `sha256-<hex>` (a tag pull of the ManifestCache, so stored, revalidated and served stale like
    any tag); then the referrers view, which knows every manifest with a subject this org cached.

    The upstream's list is held in process for the org's staleness and served stale by the same
    policy as a tag when upstream fails; the fallback tag's index is stored and outlives a restart.
    """

    def __init__(self, *, manifests: ManifestCache, upstream: Upstream, reads: BoundedReads, clock: Clock,
                 rate_limits: RateLimits, max_descriptors: int = 200_000) -> None:
        self._manifests, self._upstream, self._reads = manifests, upstream, reads
        self._clock, self._rate_limits = clock, rate_limits
        self._flights: SingleFlight = SingleFlight()
        # Bounded by the descriptors held, not the subjects: one subject may have thousands.
        self._held: LRUCache[SubjectKey, _Held] = LRUCache(
            maxsize=max_descriptors, getsizeof=lambda held: len(held.descriptors) + 1)
        # Upstreams that answered the referrers API with 404: asked through the fallback tag until then.
        self._without_api: TLRUCache[str, float] = TLRUCache(
            maxsize=1024, ttu=lambda _key, until, _now: until, timer=clock.now)

    async def referrers(self, org: OrgConfig, repository: str, subject: str) -> ReferrersAnswer:
        from_upstream = await self._upstream_list(org, repository, subject)
        held_here = await self._reads.referrers(org.name, repository, subject)
        if from_upstream is None:   # upstream failed and nothing to serve stale: what the cache holds
            return ReferrersAnswer(held_here, PullResult.STALE, ONLY_OURS)
        descriptors, result, warning = from_upstream
        return ReferrersAnswer(merged(descriptors, held_here), result, warning)

    async def _upstream_list(self, org: OrgConfig, repository: str, subject: str) -> UpstreamList | None:
        """The upstream's list (held, asked, or held and served stale); None when upstream failed,
        nothing is held, and the cache itself holds referrers to answer with instead."""
        key = (org.name, repository, subject)
        held = self._held.get(key)
        freshness = Freshness.EXPIRED
        if held is not None:
            freshness = tag_freshness(held.checked_at, self._clock.now(), org.staleness_seconds,
                                      org.max_stale_seconds)
            if freshness is Freshness.FRESH:
                return held.descriptors, PullResult.HIT, None
        try:
            descriptors, result, warning = await self._flights.run(
                ("referrers", *key), lambda: self._ask(org, repository, subject))
        except (UpstreamError, ManifestUnknown) as error:
            if held is not None and may_serve_stale(failure_kind(error), freshness, org.on_upstream_denied):
                log.warning("serving the referrers of %s/%s@%s stale: %s", org.name, repository, subject, error)
                return held.descriptors, PullResult.STALE, stale_reason(error)
            if await self._reads.referrers(org.name, repository, subject):
                return None
            raise
        if result is not PullResult.STALE:
            try:
                self._held[key] = _Held(descriptors, self._clock.now())
            except ValueError:   # larger than the whole bound: answered, not held
                self._held.pop(key, None)
        return descriptors, result, warning

    async def _ask(self, org: OrgConfig, repository: str, subject: str) -> UpstreamList:
        target = org.target(repository)
        if org.upstream not in self._without_api:
            try:
                answer = await self._upstream.get_referrers(target, subject)
            except (UpstreamNotFound, UpstreamBadContent):
                # distribution 2.8 and other pre-1.1 registries: 404 (or a page that is no index)
                self._without_api[org.upstream] = self._clock.now() + max(org.staleness_seconds, 1)
            else:
                self._rate_limits.observe(org.name, answer.rate_limit, self._clock.now())
                return answer.descriptors, PullResult.MISS, None
        return await self._fallback_tag(org, repository, subject)

    async def _fallback_tag(self, org: OrgConfig, repository: str, subject: str) -> UpstreamList:
        """The referrers tag schema: an index the pushing clients keep under `sha256-<hex>`."""
        try:
            answer = await self._manifests.manifest(org, repository, parse_reference(fallback_tag(subject)),
                                                    [OCI_INDEX])
        except ManifestUnknown:
            return [], PullResult.MISS, None   # no such tag upstream: no referrers there
        try:
            descriptors = read_referrers_index(answer.content)
        except InvalidManifest:
            # The spec: a tag that is no valid index means no referrers.
            log.info("fallback tag of %s/%s@%s is not an index; no referrers", org.name, repository, subject)
            descriptors = []
        return descriptors, answer.result, answer.warning
