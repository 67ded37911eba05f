"""Admin API: /api/v1/analytics/summary, /series and /top — cache efficiency per org over time."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio.to_thread
from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from application.admin import InvalidRequest
from application.analytics import FIGURES, Analytics
from domain.analytics import parse_generation
from interfaces.http.admin_audit import checked_text, parse_time

TIME = "ISO 8601, epoch seconds, or a duration ago (90s, 15m, 2h, 7d, 1w); rounded to whole minutes"
Org = Annotated[str | None, QueryParameter(description="the org; every org when absent (summary only)")]
Since = Annotated[str | None, QueryParameter(description=f"inclusive: {TIME}. Default: 24 hours before until "
                                                         "(series: 1 hour, 2 days or 30 days by bucket)")]
Until = Annotated[str | None, QueryParameter(description=f"exclusive: {TIME}. Default: now")]
Generation = Annotated[str | None, QueryParameter(
    description="which org of the name (see Deleting an org): a number from 1, or all; default the latest")]


def generation_of(text: str | None) -> int | None:
    try:
        return parse_generation(checked_text("generation", text))
    except ValueError as error:
        raise InvalidRequest(str(error), {"generation": "a number from 1, or all"}) from None


def times(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    now = time.time()
    return (parse_time(checked_text("since", since), "since", now),
            parse_time(checked_text("until", until), "until", now))


@get("/analytics/summary", tags=["analytics"], summary="Pulls, hit ratio and bytes per org over a range")
async def analytics_summary(analytics: NamedDependency[Analytics], org: Org = None, since: Since = None,
                            until: Until = None, generation: Generation = None) -> dict[str, Any]:
    """`pulls` by result (hit, miss, stale, revalidated, error, and any other such as denied), `hit_ratio`
    (hit + stale + revalidated over those and miss), `bytes_served` (manifests and blobs sent to clients),
    `bytes_from_upstream`, `bytes_saved` (served minus from upstream), distinct `clients` and
    `repositories`, blob `fills` and their `fill_seconds_p50`/`p95`, `evictions`. Without `org`: one such
    object per org under `orgs`. Of the latest org of each name unless `generation` (a number, or `all`)."""
    checked_text("org", org)
    chosen = generation_of(generation)
    lo, hi = times(since, until)
    return await anyio.to_thread.run_sync(lambda: analytics.summary(org, lo, hi, chosen))


@get("/analytics/series", tags=["analytics"], summary="One figure of one org per minute, hour or day")
async def analytics_series(
    analytics: NamedDependency[Analytics],
    org: Annotated[str, QueryParameter(description="the org")],
    metric: Annotated[str, QueryParameter(
        description=f"one of {', '.join(FIGURES)}, or pulls.<result> (pulls.hit, pulls.miss, ...)")] = "pulls_total",
    bucket: Annotated[Literal["minute", "hour", "day"], QueryParameter(description="the bucket")] = "hour",
    since: Since = None, until: Until = None, generation: Generation = None,
) -> dict[str, Any]:
    """`points`: one {start, t (epoch seconds), value} per bucket, 0 (or null for ratios and latencies)
    where nothing happened; at most 1500 points."""
    checked_text("org", org)
    checked_text("metric", metric)
    chosen = generation_of(generation)
    lo, hi = times(since, until)
    return await anyio.to_thread.run_sync(lambda: analytics.series(org, metric, bucket, lo, hi, chosen))


@get("/analytics/top", tags=["analytics"], summary="The repositories and images pulled most")
async def analytics_top(
    analytics: NamedDependency[Analytics],
    org: Annotated[str, QueryParameter(description="the org")],
    by: Annotated[Literal["pulls", "bytes"], QueryParameter(
        description="pulls, or bytes served (repositories; images are ranked by pulls)")] = "pulls",
    since: Since = None, until: Until = None,
    limit: Annotated[int, QueryParameter(description="entries per list, 1-1000")] = 10,
    generation: Generation = None,
) -> dict[str, Any]:
    """Counted per UTC day: the range is widened to the whole days it touches."""
    checked_text("org", org)
    chosen = generation_of(generation)
    lo, hi = times(since, until)
    return await anyio.to_thread.run_sync(lambda: analytics.top(org, by, lo, hi, limit, chosen))


ANALYTICS_HANDLERS = [analytics_summary, analytics_series, analytics_top]
