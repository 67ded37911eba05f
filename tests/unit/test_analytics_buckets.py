"""The rollup buckets: which minute, hour and day buckets tile a time range, exactly and fewest."""

from __future__ import annotations

import random

from domain.analytics import DAY, HOUR, MINUTE, at_kept_resolution, bucket_start, cover, minute_floor, minute_range

T0 = 1_764_460_800   # a UTC day boundary


def covered(pieces) -> list[int]:
    return [minute for grain, lo, hi in pieces for start in range(lo, hi, grain)
            for minute in range(start, start + grain, MINUTE)]


def test_a_range_is_tiled_by_whole_days_inside_hours_and_minutes_at_its_edges():
    since, until = T0 + 3 * HOUR + 7 * MINUTE, T0 + 32 * DAY + 5 * HOUR + 2 * MINUTE
    pieces = cover(since, until)
    assert [grain for grain, _, _ in pieces] == [MINUTE, HOUR, DAY, HOUR, MINUTE]
    assert sum((hi - lo) // grain for grain, lo, hi in pieces) == 53 + 20 + 31 + 5 + 2
    assert covered(pieces) == list(range(since, until, MINUTE))


def test_any_range_is_covered_exactly_once():
    rng = random.Random(13)
    for _ in range(200):
        since = T0 + rng.randrange(0, 40 * DAY, MINUTE)
        until = since + rng.randrange(MINUTE, 35 * DAY, MINUTE)
        assert covered(cover(since, until)) == list(range(since, until, MINUTE))


def test_times_are_widened_to_whole_minutes_and_buckets_start_on_their_boundary():
    assert minute_range(T0 + 59.5, T0 + 61) == (T0, T0 + 2 * MINUTE)
    assert bucket_start(T0 + DAY - 1, DAY) == T0 and bucket_start(T0 + 3599, HOUR) == T0
    assert cover(T0, T0) == []


def test_before_the_minute_floor_a_range_is_widened_to_whole_hours_and_covered_without_minutes():
    floor = minute_floor(T0 + 20 * DAY + 5 * MINUTE, 14)
    assert floor == T0 + 6 * DAY and minute_floor(T0, 0) == 0
    rng = random.Random(7)
    for _ in range(200):
        since = T0 + rng.randrange(0, 12 * DAY, MINUTE)
        until = since + rng.randrange(MINUTE, 12 * DAY, MINUTE)
        lo, hi = at_kept_resolution(since, until, floor)
        assert lo <= since and hi >= until
        assert all(lo >= floor for grain, lo, _ in cover(lo, hi) if grain == MINUTE)
        if since >= floor:
            assert (lo, hi) == (since, until)
        if until < floor:
            assert lo % HOUR == 0 and hi % HOUR == 0 and hi - until < HOUR
