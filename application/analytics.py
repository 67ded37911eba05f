"""Analytics queries: summary, series and top lists per org over a time range, read from the analytics view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from application.admin import InvalidRequest
from application.errors import OrgUnknown
from domain.analytics import ALL_GENERATIONS, GRAINS, MINUTE, at_kept_resolution, cover, minute_range
from domain.traffic import quantile

BASE_RESULTS = ("hit", "miss", "stale", "revalidated", "error")   # always reported, 0 when none
SERVED_FROM_CACHE = ("hit", "stale", "revalidated")                # answered without fetching the manifest
FIGURES = ("pulls_total", "hit_ratio", "bytes_served", "bytes_from_upstream", "bytes_saved", "clients",
           "repositories", "blob_hits", "blob_misses", "fills", "fills_failed", "fill_seconds_p50",
           "fill_seconds_p95", "stale", "denied", "evictions")
MAX_POINTS = 1500          # a series longer than this asks for a coarser bucket
MAX_TOP = 1000
DEFAULT_SPAN = 86400       # summary and top without `since`: the last 24 hours
SERIES_SPAN = {"minute": 3600, "hour": 2 * 86400, "day": 30 * 86400}


class AnalyticsReadModel(Protocol):
    """The analytics view (projections/analytics.py)."""

    def totals(self, pieces: list[tuple[int, int, int]], org: str | None = None,
               by_start: bool = False, distinct: bool = True, generation: int | None = None,
               parts: tuple[str, ...] = ("pulls", "traffic", "fills")) -> dict[Any, Any]: ...

    def top(self, org: str, since: int, until: int, by: str, limit: int,
            generation: int | None = None) -> tuple[list[tuple], list[tuple]]: ...

    def orgs(self) -> list[str]: ...

    def minute_floor(self) -> int:
        """The first hour whose minute buckets the view keeps (0: all)."""


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sums(totals: Any | None) -> tuple[dict, Any, list[int], int, int]:
    """(pulls by result, traffic sums, fill-duration counts, clients, repositories) of one org's totals."""
    pulls = {result: 0 for result in BASE_RESULTS}
    if totals is None:
        return pulls, {}, [], 0, 0
    pulls.update(totals.pulls)
    fill_counts = ([totals.fill_seconds.get(i, 0) for i in range(max(totals.fill_seconds) + 1)]
                   if totals.fill_seconds else [])
    return pulls, totals.traffic, fill_counts, totals.clients, totals.repositories


def _hit_ratio(pulls: dict) -> float | None:
    # Manifest pulls answered from the cache (hit, stale, revalidated) over those answered with content.
    cached = sum(pulls.get(result, 0) for result in SERVED_FROM_CACHE)
    answered = cached + pulls.get("miss", 0)
    return round(cached / answered, 4) if answered else None


# Each figure from (pulls, traffic, fill counts, clients, repositories), in the order the API lists them.
_FIGURES: dict[str, Callable[..., Any]] = {
    "pulls_total": lambda pulls, traffic, fills, clients, repositories: sum(pulls.values()),
    "hit_ratio": lambda pulls, *_: _hit_ratio(pulls),
    "bytes_served": lambda _, traffic, *__: traffic.get("bytes_served", 0),
    "bytes_from_upstream": lambda _, traffic, *__: traffic.get("bytes_from_upstream", 0),
    # Bytes clients received that upstream did not send: what the cache saved upstream and the link.
    "bytes_saved": lambda _, traffic, *__: max(0, traffic.get("bytes_served", 0) - traffic.get("bytes_from_upstream", 0)),
    "clients": lambda pulls, traffic, fills, clients, repositories: clients,
    "repositories": lambda pulls, traffic, fills, clients, repositories: repositories,
    "blob_hits": lambda _, traffic, *__: traffic.get("blob_hits", 0),
    "blob_misses": lambda _, traffic, *__: traffic.get("blob_misses", 0),
    "fills": lambda _, traffic, *__: traffic.get("fills", 0),
    "fills_failed": lambda _, traffic, *__: traffic.get("fills_failed", 0),
    "fill_seconds_p50": lambda pulls, traffic, fills, *_: quantile(fills, 0.5),
    "fill_seconds_p95": lambda pulls, traffic, fills, *_: quantile(fills, 0.95),
    "stale": lambda pulls, *_: pulls.get("stale", 0),
    "denied": lambda pulls, *_: pulls.get("denied", 0),
    "evictions": lambda _, traffic, *__: traffic.get("evictions", 0),
}
assert tuple(_FIGURES) == FIGURES
# The view's sums each figure is made of (the rest: traffic): a series reads only what its figure needs.
_PARTS = {"pulls_total": ("pulls",), "hit_ratio": ("pulls",), "stale": ("pulls",), "denied": ("pulls",),
          "clients": (), "repositories": (), "fill_seconds_p50": ("fills",), "fill_seconds_p95": ("fills",)}


def figures(totals: Any | None) -> dict[str, Any]:
    """The numbers of one org over some buckets, named as the API and the dashboard show them."""
    sums = _sums(totals)
    return {"pulls": sums[0], **{name: of(*sums) for name, of in _FIGURES.items()}}


def figure(totals: Any | None, metric: str) -> Any:
    """One figure of figures(totals) (or `pulls.<result>`), worked out alone: a series has one per bucket."""
    sums = _sums(totals)
    return sums[0].get(metric[6:], 0) if metric.startswith("pulls.") else _FIGURES[metric](*sums)


def parts_of(metric: str) -> tuple[str, ...]:
    return ("pulls",) if metric.startswith("pulls.") else _PARTS.get(metric, ("traffic",))


class Analytics:
    """The use cases behind /api/v1/analytics, `entrepot stats` and the dashboard."""

    def __init__(self, view: AnalyticsReadModel, known_orgs: Callable[[], list[str]],
                 now: Callable[[], float]) -> None:
        self._view, self._known_orgs, self._now = view, known_orgs, now

    def now(self) -> float:
        return self._now()

    def _range(self, since: float | None, until: float | None, span: float) -> tuple[int, int]:
        until = self._now() if until is None else until
        since = until - span if since is None else since
        if since >= until:
            raise InvalidRequest("since must be before until", {"since": "must be before until"})
        return minute_range(since, until)

    def _kept_range(self, since: float | None, until: float | None, span: float) -> tuple[int, int]:
        """_range, widened to whole hours where it reaches back before the minute buckets kept."""
        return at_kept_resolution(*self._range(since, until, span), self._view.minute_floor())

    def _check_org(self, org: str) -> None:
        if org not in self._known_orgs() and org not in self._view.orgs():
            raise OrgUnknown(f"no cache organization named {org!r}", org=org)

    def orgs(self) -> list[str]:
        return sorted(set(self._known_orgs()) | set(self._view.orgs()))

    def summary(self, org: str | None = None, since: float | None = None, until: float | None = None,
                generation: int | None = None) -> dict:
        """One org's figures over [since, until) (whole minutes), or every org's under "orgs"; of the
        latest generation of each org name unless `generation` (domain.analytics.ALL_GENERATIONS) says."""
        lo, hi = self._kept_range(since, until, DEFAULT_SPAN)
        if org is not None:
            self._check_org(org)
            totals = self._view.totals(cover(lo, hi), org, generation=generation)
        else:   # every org in one pass over the (grain, start) indexes: a few hundred rows per org
            totals = self._view.totals(cover(lo, hi), generation=generation)
        chosen = _generation_field(generation)
        if org is not None:
            return {"org": org, **chosen, "since": iso(lo), "until": iso(hi), **figures(totals.get(org))}
        return {"since": iso(lo), "until": iso(hi), **chosen,
                "orgs": [{"org": name, "since": iso(lo), "until": iso(hi), **figures(totals.get(name))}
                         for name in self.orgs()]}

    def series(self, org: str, metric: str, bucket: str = "hour", since: float | None = None,
               until: float | None = None, generation: int | None = None) -> dict:
        """One figure per bucket from since's bucket to until's, zeros (or null) where nothing happened."""
        if metric not in FIGURES and not metric.startswith("pulls."):
            raise InvalidRequest("unknown metric", {"metric": f"one of {', '.join(FIGURES)}, or pulls.<result>"})
        lo, hi, rows = self._buckets(org, bucket, since, until, distinct=metric in ("clients", "repositories"),
                                     generation=generation, parts=parts_of(metric))
        grain = GRAINS[bucket]
        points = [{"start": iso(start), "t": start, "value": figure(rows.get((org, start)), metric)}
                  for start in range(lo, hi, grain)]
        return {"org": org, **_generation_field(generation), "metric": metric, "bucket": bucket, "since": iso(lo),
                "until": iso(hi), "points": points}

    def over_time(self, org: str, bucket: str, since: float | None = None, until: float | None = None,
                  distinct: bool = False, generation: int | None = None) -> tuple[int, int, list[tuple[int, dict]]]:
        """(first start, end, [(bucket start, figures)]) for every bucket of the range: what the charts draw.
        Distinct clients and repositories (0 without `distinct`) cost a row read per member and bucket."""
        lo, hi, rows = self._buckets(org, bucket, since, until, distinct, generation)
        return lo, hi, [(start, figures(rows.get((org, start)))) for start in range(lo, hi, GRAINS[bucket])]

    def _buckets(self, org: str, bucket: str, since: float | None, until: float | None, distinct: bool,
                 generation: int | None, parts: tuple[str, ...] = ("pulls", "traffic", "fills")) -> tuple[int, int, dict]:
        """(first start, end, {(org, bucket start): the view's totals}) over whole buckets of the range."""
        if bucket not in GRAINS:
            raise InvalidRequest(f"bucket must be one of {', '.join(GRAINS)}", {"bucket": "minute, hour or day"})
        grain = GRAINS[bucket]
        lo, hi = self._range(since, until, SERIES_SPAN[bucket])
        lo, hi = lo // grain * grain, -(-hi // grain) * grain
        if (hi - lo) // grain > MAX_POINTS:
            raise InvalidRequest("too many points", {"bucket": f"at most {MAX_POINTS} points; use a coarser bucket"})
        if grain == MINUTE and lo < (floor := self._view.minute_floor()):
            message = (f"minute buckets are kept from {iso(floor)} on ([analytics] minute_days); older figures "
                       "are in hour and day buckets")
            raise InvalidRequest(message, {"since": f"from {iso(floor)} on for bucket=minute, or use bucket=hour"})
        self._check_org(org)
        return lo, hi, self._view.totals([(grain, lo, hi)], org, by_start=True, distinct=distinct,
                                         generation=generation, parts=parts)

    def top(self, org: str, by: str = "pulls", since: float | None = None, until: float | None = None,
            limit: int = 10, generation: int | None = None) -> dict:
        """The repositories and images (repository:reference) pulled most, on the UTC days the range touches."""
        if by not in ("pulls", "bytes"):
            raise InvalidRequest("by must be pulls or bytes", {"by": "pulls or bytes"})
        if not 1 <= limit <= MAX_TOP:
            raise InvalidRequest("limit out of range", {"limit": f"between 1 and {MAX_TOP}"})
        lo, hi = self._range(since, until, DEFAULT_SPAN)
        self._check_org(org)
        repositories, images = self._view.top(org, lo, hi, by, limit, generation=generation)
        return {"org": org, **_generation_field(generation), "by": by, "since": iso(lo), "until": iso(hi),
                "repositories": [{"repository": r, "pulls": p, "bytes_served": b} for r, p, b in repositories],
                "images": [{"repository": r, "reference": ref, "pulls": p} for r, ref, p in images]}


def _generation_field(generation: int | None) -> dict:
    """What an answer says about the generations it covers: only when one was asked for."""
    if generation is None:
        return {}
    return {"generation": "all" if generation == ALL_GENERATIONS else generation}
