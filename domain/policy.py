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
