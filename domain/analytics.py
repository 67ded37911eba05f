"""Time buckets for analytics: the minute, hour and day rollups, and which buckets cover a time range."""

from __future__ import annotations

MINUTE, HOUR, DAY = 60, 3600, 86400
GRAINS = {"minute": MINUTE, "hour": HOUR, "day": DAY}     # by name, as the API spells them
ROLLUPS = (MINUTE, HOUR, DAY)                               # every event is added to one bucket of each
# Which generations of an org (domain.org.CacheOrg.Recreated) a query reads: None the latest of the
# name (what a new org of a deleted one's name shows), a number that one, ALL_GENERATIONS all added up.
ALL_GENERATIONS = 0
# Minute buckets are kept for this many days back (the [analytics] minute_days setting; 0: forever). Older
# pulls and traffic stay in their hour and day buckets: a year of minute buckets was most of the view's
# rows and of a rebuild's writes (bench/results/2026-12-01-rebuild-s13.md), and nobody charts a
# minute of last March.
DEFAULT_MINUTE_DAYS = 14


def parse_generation(text: str | None) -> int | None:
    """The `generation` a user asked for: absent the latest, `all`, or a number from 1; ValueError else."""
    if text is None or text == "":
        return None
    if text == "all":
        return ALL_GENERATIONS
    if not text.isdigit() or int(text) < 1:
        raise ValueError("generation must be a number from 1, or all")
    return int(text)


def bucket_start(at: float, grain: int) -> int:
    """The start (seconds since the epoch, UTC) of the bucket of `grain` seconds holding `at`."""
    return int(at // grain) * grain


def minute_range(since: float, until: float) -> tuple[int, int]:
    """[since, until) widened to whole minutes: the finest resolution the rollups answer at."""
    return bucket_start(since, MINUTE), -bucket_start(-until, MINUTE)


def minute_floor(now: float, days: float) -> int:
    """The first hour whose minute buckets a view keeping `days` days of them (0: all) holds at `now`."""
    if days <= 0:
        return 0
    return bucket_start(now - days * DAY, HOUR)


def at_kept_resolution(since: int, until: int, floor: int) -> tuple[int, int]:
    """[since, until) (whole minutes) widened to whole hours where it lies before `floor` (a whole hour):
    there only hour and day buckets are kept, so that is the finest range they answer exactly."""
    if since < floor:
        since = bucket_start(since, HOUR)
    if until < floor:
        until = -bucket_start(-until, HOUR)
    return since, until


def cover(since: int, until: int, grains: tuple[int, ...] = (DAY, HOUR, MINUTE)) -> list[tuple[int, int, int]]:
    """The fewest buckets that tile [since, until) exactly: (grain, first start, end) pieces, coarsest
    in the middle. A 30-day range is about 30 day rows plus at most 46 hour and 118 minute rows per org,
    however much history there is. `since` and `until` are whole minutes."""
    if since >= until:
        return []
    grain, finer = grains[0], grains[1:]
    first, last = -bucket_start(-since, grain), bucket_start(until, grain)
    if not finer:
        return [(grain, since, until)]
    if first >= last:
        return cover(since, until, finer)
    return [*cover(since, first, finer), (grain, first, last), *cover(last, until, finer)]
