"""Each pull's id: random, version 4, never handed out twice (nor by a forked child and its parent)."""

from __future__ import annotations

import os
from uuid import UUID

from domain.pull import IDS_PER_DRAW, Pull, fresh_id


def test_ids_are_random_version_4_uuids_never_repeated_across_draws():
    ids = [fresh_id() for _ in range(5 * IDS_PER_DRAW + 3)]
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4} and {i.variant for i in ids} == {ids[0].variant}
    event = Pull.recorded(org="hub", repository="library/alpine", reference="3.19", digest="", result="hit",
                          client="", user_agent="", at=1.0)
    assert event.originator_id not in ids and event.originator_id.version == 4


def test_a_forked_child_draws_ids_of_its_own():
    fresh_id()   # the pool holds ids the child would otherwise hand out too
    read, write = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover (the child process)
        os.write(write, fresh_id().bytes)
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = UUID(bytes=os.read(read, 16))
    os.close(read)
    assert childs != fresh_id()
