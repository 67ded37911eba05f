"""What a prefetch may take (domain/prefetch.py): the blobs that fit in the room left under free space and quota."""

from __future__ import annotations

from domain.prefetch import blobs_that_fit, quota_room, room_left

SIZES = {"config": 2, "a": 20, "b": 20, "c": 5}


def test_blobs_are_taken_in_order_while_they_fit_and_a_smaller_one_after_a_big_one_still_fits():
    assert blobs_that_fit(["config", "a", "b", "c"], SIZES, 30) == ["config", "a", "c"]


def test_without_a_bound_every_blob_is_taken_once():
    assert blobs_that_fit(["config", "a", "a", "zzz"], SIZES, None) == ["config", "a", "zzz"]


def test_with_a_bound_a_blob_of_unknown_size_is_never_taken():
    assert blobs_that_fit(["zzz", "config"], SIZES, 10**12) == ["config"]


def test_no_room_takes_nothing():
    assert blobs_that_fit(["config", "a"], SIZES, 0) == []


def test_the_quota_headroom_is_the_quota_less_what_the_org_holds_and_its_prefetches_under_way():
    assert quota_room(100, usage=60, reserved=15) == 25
    assert quota_room(100, usage=90, reserved=15) == -5    # over already: room_left makes it 0
    assert quota_room(0, usage=10**9, reserved=10**9) is None   # no quota, no bound


def test_the_room_left_is_the_tightest_bound_and_never_negative():
    assert room_left(None, None) is None
    assert room_left(50, None) == 50
    assert room_left(50, 25) == 25
    assert room_left(-5, 25) == 0


def test_a_quota_headroom_below_an_image_prefetches_only_what_fits_of_it():
    room = room_left(10**9, quota_room(100, usage=70, reserved=0))
    assert blobs_that_fit(["config", "a", "b", "c"], SIZES, room) == ["config", "a", "c"]
