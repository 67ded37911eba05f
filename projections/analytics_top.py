"""Exact top-N over many days without adding up every row of every day (the threshold algorithm).

A 30-day top list of a busy org sums a row per (day, image) for thousands of images a day; only a few
of them can be in the top. Each day's rows are read in descending order down to a depth (an index
range); whatever a day's list did not reach is at most that day's last value read (its floor). So a
key read on no day totals at most the sum of the floors, and a key read on some days at most what was
read plus the floors of the others. The keys that could still reach the top are summed exactly;
when the top's last total is above what any unread key could total, the answer is exact. Otherwise
the depth grows (at worst to every row: the plain sum).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

FIRST_DEPTH = 64


def exact_top(day_tops: Callable[[int], list[list[tuple[Hashable, int]]]],
              totals: Callable[[list], dict[Hashable, int]], limit: int) -> list[tuple[Hashable, int]]:
    """The `limit` keys with the highest totals, [(key, total)], highest first, ties by key ascending.

    `day_tops(depth)` gives each day's first `depth` (key, value) rows, value descending (a day with
    fewer rows has no more); `totals(keys)` the exact totals of those keys over every day."""
    depth = max(FIRST_DEPTH, 2 * limit)
    while True:
        days = day_tops(depth)
        complete = all(len(rows) < depth for rows in days)   # every row of every day read
        floors = [rows[-1][1] if len(rows) >= depth else 0 for rows in days]
        read: dict = {}          # key -> sum of the values read
        floors_read: dict = {}   # key -> sum of the floors of the days it was read on
        for rows, floor in zip(days, floors):
            for key, value in rows:
                read[key] = read.get(key, 0) + value
                floors_read[key] = floors_read.get(key, 0) + floor
        unread = sum(floors)     # the most a key read on no day can total
        upper = {key: total + unread - floors_read[key] for key, total in read.items()}
        lows = sorted(read.values(), reverse=True)
        least = lows[limit - 1] if len(lows) >= limit else 0   # the top's last total is at least this
        exact = {key: total for key, total in read.items() if upper[key] == total}
        unsure = [key for key, total in read.items() if upper[key] != total and upper[key] >= least]
        if unsure:
            exact.update(totals(unsure))
        top = sorted(exact.items(), key=lambda item: (-item[1], item[0]))[:limit]
        # A key with upper < least is below `limit` keys read already; an unread key is at most `unread`,
        # and must be strictly below the last one (a tie would be ranked by key).
        if complete or (len(top) == limit and top[-1][1] > unread):
            return top
        depth *= 4
