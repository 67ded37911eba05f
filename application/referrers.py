"""The referrers cache (OCI 1.1): the upstream's referrers list, recorded and cached like a tag, merged with
every manifest with that subject the cache itself holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cachetools import TLRUCache, TTLCache

from application.bounded_reads import BoundedReads, KnownReferrers
from application.errors import (EventStoreUnavailable, ManifestUnknown, UpstreamBadContent, UpstreamError,
                                UpstreamNotFound)
from application.manifests import ManifestCache
from application.orgs import OrgConfig
from application.ports import Clock, Ledger, RecordedReferrers, Upstream
from application.ratelimits import RateLimits
from application.singleflight import SingleFlight
from application.stale import failure_kind, stale_reason
from domain.manifest import OCI_INDEX, InvalidManifest
from domain.names import Digest, parse_reference
from domain.policy import Freshness, may_serve_stale, tag_freshness
from domain.pull import PullResult
from domain.referrers import Descriptor, fallback_tag, merged, read_referrers_index, referrers_index
from domain.referrers_list import as_recorded

log = logging.getLogger(__name__)
SubjectKey = tuple[str, str, str]  # (org, repository, subject digest)
UpstreamList = tuple[list[Descriptor], PullResult, "str | None"]   # descriptors, how they were had, warning
ONLY_OURS = "upstream unavailable and its list not held: listing only the referrers this cache holds"
# Answers that upstream gave just now, so worth recording (a HIT or STALE fallback tag says nothing new).
ANSWERED = (PullResult.MISS, PullResult.REVALIDATED)


@dataclass(frozen=True)
class ReferrersAnswer:
    descriptors: list[Descriptor]     # every referrer, unfiltered: the edge filters and pages
    result: PullResult
    warning: str | None = None

    @property
    def digest(self) -> str:
        """The digest of the whole list as an index: what the audit records as pulled."""
        return str(Digest.of(referrers_index(self.descriptors)))


class ReferrersCache:
    """Upstream first, through its referrers API when it has one, else through its fallback tag
    `sha256-<hex>` (a tag pull of the ManifestCache); then the referrers view, which knows every
    manifest with a subject this org holds.

    The upstream's list is recorded (a ReferrersList event when it changed, a revalidation when upstream
    confirmed it past the org's staleness) and read back from the referrers view: inside staleness it is
    answered with no upstream contact, past it asked again, and served stale by the tag policy when
    upstream fails — after a restart too.
    """

    def __init__(self, *, manifests: ManifestCache, upstream: Upstream, reads: BoundedReads, ledger: Ledger,
                 clock: Clock, rate_limits: RateLimits, max_descriptors: int = 200_000,
                 recent_seconds: float = 5.0) -> None:
        self._manifests, self._upstream, self._reads, self._ledger = manifests, upstream, reads, ledger
        self._clock, self._rate_limits = clock, rate_limits
        self._flights: SingleFlight = SingleFlight()
        # Our own recordings, read before the referrers view catches up (or while the event store is
        # down). Short-lived like a tag's own writes: a flush drops the view's list, and this copy must
        # stop answering soon after. Bounded by the descriptors held: one subject may have thousands.
        self._recent: TTLCache[SubjectKey, RecordedReferrers] = TTLCache(
            maxsize=max_descriptors, ttl=recent_seconds, timer=clock.now,
            getsizeof=lambda listed: len(listed.descriptors) + 1)
        # Upstreams that answered the referrers API with 404: asked through the fallback tag until then.
        self._without_api: TLRUCache[str, float] = TLRUCache(
            maxsize=1024, ttu=lambda _key, until, _now: until, timer=clock.now)

    async def referrers(self, org: OrgConfig, repository: str, subject: str) -> ReferrersAnswer:
        known = await self._reads.referrers(org.name, repository, subject)
        from_upstream = await self._upstream_list(org, repository, subject, known)
        if from_upstream is None:   # upstream failed and nothing to serve stale: what the cache holds
            return ReferrersAnswer(known.held, PullResult.STALE, ONLY_OURS)
        descriptors, result, warning = from_upstream
        return ReferrersAnswer(merged(descriptors, known.held), result, warning)

    def forget(self, org: str, repository: str | None = None) -> None:
        """Flushed: this process's own recordings of the org (or repository) stop answering now."""
        for key in [key for key in list(self._recent.keys())
                    if key[0] == org and (repository is None or key[1] == repository)]:
            self._recent.pop(key, None)

    async def _upstream_list(self, org: OrgConfig, repository: str, subject: str,
                             known: KnownReferrers) -> UpstreamList | None:
        """The upstream's list (recorded, asked, or recorded and served stale); None when upstream failed,
        nothing is recorded, and the cache itself holds referrers to answer with instead."""
        key = (org.name, repository, subject)
        recorded = self._newest(self._recent.get(key), known.upstream)
        freshness = Freshness.EXPIRED
        if recorded is not None:
            freshness = tag_freshness(recorded.checked_at, self._clock.now(), org.staleness_seconds,
                                      org.max_stale_seconds)
            if freshness is Freshness.FRESH:
                return recorded.descriptors, PullResult.HIT, None
        try:
            return await self._flights.run(
                ("referrers", *key), lambda: self._ask_and_record(org, repository, subject, recorded,
                                                                  shown=known.upstream is not None))
        except (UpstreamError, ManifestUnknown) as error:
            if recorded is not None and may_serve_stale(failure_kind(error), freshness, org.on_upstream_denied):
                reason = stale_reason(error)
                log.warning("serving the referrers of %s/%s@%s stale: %s", org.name, repository, subject, reason)
                return recorded.descriptors, PullResult.STALE, reason
            if known.held:
                return None
            raise

    @staticmethod
    def _newest(recent: RecordedReferrers | None, viewed: RecordedReferrers | None) -> RecordedReferrers | None:
        if recent is None or (viewed is not None and viewed.checked_at >= recent.checked_at):
            return viewed
        return recent

    async def _ask_and_record(self, org: OrgConfig, repository: str, subject: str,
                              recorded: RecordedReferrers | None, shown: bool) -> UpstreamList:
        descriptors, result, warning = await self._ask(org, repository, subject)
        if result not in ANSWERED:
            return descriptors, result, warning
        if recorded is not None and descriptors == recorded.descriptors:
            result = PullResult.REVALIDATED
        now = self._clock.now()
        try:
            self._recent[(org.name, repository, subject)] = RecordedReferrers(descriptors, now)
        except ValueError:   # larger than the whole bound: recorded, read back from the view
            self._recent.pop((org.name, repository, subject), None)
        try:
            await self._ledger.referrers_listed(org.name, repository, subject, as_recorded(descriptors), now,
                                                shown=shown)
        except EventStoreUnavailable as error:
            # Upstream answered: the client gets the list; this process holds it a few seconds, and the
            # next answer after the outage is recorded.
            log.warning("listed the referrers of %s/%s@%s but could not record them: %s", org.name, repository,
                        subject, error.message)
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
