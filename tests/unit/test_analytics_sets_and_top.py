"""The analytics view's stored member sets and its exact top lists, against plain Python sets and sums."""

from __future__ import annotations

import random

from projections import analytics_sets
from projections.analytics_top import exact_top


def test_a_set_comes_back_as_stored_in_its_smaller_form():
    rng = random.Random(13)
    for _ in range(300):
        space = rng.choice((8, 300, 100_000))
        ids = set(rng.sample(range(space), rng.randrange(0, min(space, 40))))
        bits = analytics_sets.of(ids)
        assert bits.bit_count() == len(ids) and analytics_sets.members(bits) == sorted(ids)
        stored = analytics_sets.encode(bits)
        assert analytics_sets.decode(stored) == bits
        dense = (bits.bit_length() + 7) // 8
        assert len(stored) == 1 + min(dense, 4 * len(ids))
    few_of_many = analytics_sets.encode(analytics_sets.of([3, 99_999]))
    assert few_of_many[0] == analytics_sets.SPARSE and len(few_of_many) == 9


def test_members_given_as_integers_are_stored_as_their_set_would_be():
    rng = random.Random(29)
    for _ in range(500):
        space = rng.choice((8, 300, 20_000, 100_000))
        ids = [rng.randrange(space) for _ in range(rng.randrange(0, 60))]   # repeats too
        assert analytics_sets.encode_members(ids) == analytics_sets.encode(analytics_sets.of(ids))
    assert analytics_sets.encode_members([]) == analytics_sets.encode(0)


def test_the_union_of_stored_sets_dense_and_sparse_counts_each_member_once():
    rng = random.Random(3)
    for _ in range(100):
        sets = [set(rng.sample(range(rng.choice((64, 5000))), rng.randrange(0, 30))) for _ in range(rng.randrange(0, 8))]
        stored = [analytics_sets.encode(analytics_sets.of(ids)) for ids in sets]
        assert analytics_sets.members(analytics_sets.union(stored)) == sorted(set().union(*sets))


def brute_top(days, limit):
    totals: dict = {}
    for rows in days:
        for key, value in rows:
            totals[key] = totals.get(key, 0) + value
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]


def test_a_union_asked_again_finds_its_sparse_sets_decoded_and_answers_the_same():
    """Decoded sparse sets are kept by their bytes: the second union reads them from there, and a set
    stored with other members (other bytes) is never taken for one decoded earlier."""
    rng = random.Random(7)
    members = [sorted(rng.sample(range(1_000_000), rng.randrange(1, 40))) for _ in range(200)]
    stored = [analytics_sets.encode(analytics_sets.of(ids)) for ids in members]
    assert all(value[0] == analytics_sets.SPARSE for value in stored)
    everyone = {i for ids in members for i in ids}
    first = analytics_sets.union(stored)
    assert all(value in analytics_sets._DECODED for value in stored)
    assert analytics_sets.union(stored) == first and analytics_sets.members(first) == sorted(everyone)
    other = analytics_sets.encode(analytics_sets.of([*members[0], 999_999]))
    assert analytics_sets.members(analytics_sets.union([other])) == sorted({*members[0], 999_999})


def test_the_top_of_days_read_partly_is_the_top_of_the_plain_sums():
    rng = random.Random(7)
    for case in range(60):
        keys = [f"image{i:04d}" for i in range(rng.choice((5, 80, 400)))]
        weights = [1 / (i + 1) ** rng.choice((0.0, 0.7, 1.1)) for i in range(len(keys))]
        days = []
        for _ in range(rng.randrange(1, 32)):
            counts: dict = {}
            for key in rng.choices(keys, weights, k=rng.randrange(0, 3000)):
                counts[key] = counts.get(key, 0) + rng.choice((1, 1, 0)) if case % 3 == 0 else counts.get(key, 0) + 1
            days.append(sorted(counts.items(), key=lambda item: -item[1]))
        asked = []

        def day_tops(depth):
            asked.append(depth)
            return [rows[:depth] for rows in days]

        def totals(wanted):
            return {key: total for key, total in brute_top(days, len(keys)) if key in set(wanted)}
        limit = rng.choice((1, 3, 10, 50))
        assert exact_top(day_tops, totals, limit) == brute_top(days, limit), case


def test_a_key_steady_every_day_but_never_in_a_day_s_first_rows_still_tops_the_range():
    # Each day: 100 keys of that day only, at 10 pulls, and one key at 5 pulls every day (155 in all).
    days = [sorted([(f"day{d}-{i:03d}", 10) for i in range(100)] + [("steady", 5)], key=lambda row: -row[1])
            for d in range(31)]
    depths = []

    def day_tops(depth):
        depths.append(depth)
        return [rows[:depth] for rows in days]
    assert exact_top(day_tops, lambda wanted: dict(brute_top(days, 10_000)), 2) == [("steady", 155), ("day0-000", 10)]
    assert len(depths) == 2   # the first depth could not rule out an unread key
