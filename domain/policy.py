"""Pure policies of the cache: how fresh a cached tag is."""

from __future__ import annotations

import enum


class Freshness(enum.Enum):
    FRESH = "fresh"            # inside staleness: serve with no upstream contact
    NEEDS_CHECK = "check"      # past staleness: revalidate upstream, may serve stale on failure
    EXPIRED = "expired"        # past max_stale: never served without upstream confirmation


def tag_freshness(checked_at: float, now: float, staleness: float, max_stale: float) -> Freshness:
    """Decide from the last time upstream confirmed a tag how it may be served now."""
    age = now - checked_at
    if age < staleness:
        return Freshness.FRESH
    if age < max_stale:
        return Freshness.NEEDS_CHECK
    return Freshness.EXPIRED


class UpstreamFailure(enum.Enum):
    UNAVAILABLE = "unavailable"      # refused, DNS, timeout, 5xx, or the back-off after repeated failures
    RATE_LIMITED = "rate-limited"    # 429, or our own floor on the remaining pulls
    DENIED = "denied"                # 401/403 for our credentials
    NOT_FOUND = "not-found"          # the tag was deleted upstream
    BAD_CONTENT = "bad-content"      # upstream sent something unusable


def may_serve_stale(failure: UpstreamFailure, freshness: Freshness, on_denied: str) -> bool:
    """Whether a cached tag past its staleness may be served when revalidation failed this way.

    A tag deleted upstream is kept until max_stale like any other failure: a deletion cannot be
    told from a transient upstream mistake, and max_stale bounds how long it is served.
    """
    if freshness is Freshness.EXPIRED:
        return False
    if failure is UpstreamFailure.DENIED:
        return on_denied == "serve-stale"
    return True
