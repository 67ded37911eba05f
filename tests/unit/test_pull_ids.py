"""Each pull's id: time-ordered (version 7, the pull's millisecond first), never handed out twice (nor by a
forked child and its parent)."""

from __future__ import annotations

import os
from uuid import UUID

from domain.pull import IDS_PER_DRAW, Pull, fresh_id


def test_ids_are_version_7_uuids_never_repeated_across_draws():
    ids = [fresh_id(1_700_000_000.0) for _ in range(5 * IDS_PER_DRAW + 3)]
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {ids[0].variant}
    event = Pull.recorded(org="hub", repository="library/alpine", reference="3.19", digest="", result="hit",
                          client="", user_agent="", at=1.0)
    assert event.originator_id not in ids and event.originator_id.version == 7


def test_ids_follow_the_pulls_time_so_the_event_stores_key_grows_at_its_end():
    # Random ids put each insert on a random leaf of the (originator_id, version) index: a page read and
    # written per pull once the store holds millions. In time order, text and UUID order agree.
    times = [1_700_000_000.0 + n * 0.002 for n in range(2000)]
    ids = [fresh_id(at) for at in times]
    assert ids == sorted(ids) and [str(i) for i in ids] == sorted(str(i) for i in ids)
    assert int(ids[0].hex[:12], 16) == 1_700_000_000_000   # the first 48 bits: the pull's millisecond
    same_millisecond = {fresh_id(5.0).hex[12:] for _ in range(1000)}
    assert len(same_millisecond) == 1000   # random below the millisecond


def test_a_forked_child_draws_ids_of_its_own():
    fresh_id(1.0)   # the pool holds random bits the child would otherwise use too
    read, write = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover (the child process)
        os.write(write, fresh_id(1.0).bytes)
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = UUID(bytes=os.read(read, 16))
    os.close(read)
    assert childs != fresh_id(1.0)
