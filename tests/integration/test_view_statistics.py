"""When a PostgreSQL view copy analyzes its tables: as it grows from empty, never for a few rows on a big copy."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import Tracking

from domain.pull import Pull
from infra.projection_runtime import open_view

pytestmark = pytest.mark.integration


@pytest.fixture
def env(postgres_env_factory):
    return postgres_env_factory("main")


def pages(first: int, sizes: list[int]):
    """Pages of Pull.Recorded events with the given sizes, numbered from `first` in the Pulls log."""
    n = first
    for size in sizes:
        batch = []
        for _ in range(size):
            event = Pull(org="hub", repository="library/alpine", reference="3.20", digest="sha256:" + "1" * 64,
                         result="hit", client="10.0.0.7", user_agent="containerd/2.0", at=100.0 + n
                         ).collect_events()[0]
            batch.append((event, Tracking("Pulls", n)))
            n += 1
        yield batch


def counted_analyses(view) -> list[int]:
    calls: list[int] = []
    analyze = view._analyze

    def counting() -> float:
        calls.append(1)
        return analyze()

    view._analyze = counting
    return calls


def audit_rows_analyzed(view) -> float:
    with view.datastore.transaction(commit=False) as c:
        c.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (view._write["audit"].as_string(c),))
        return c.fetchone()["reltuples"]


def test_a_copy_growing_from_empty_is_analyzed_after_its_first_page_then_at_each_doubling(env):
    view = open_view("audit", env)
    try:
        calls = counted_analyses(view)
        for number, page in enumerate(pages(1, [10] * 8), start=1):
            view.process(page)
            if number == 1:   # the planner sees the first rows at once, not an empty table's plans
                assert len(calls) == 1 and audit_rows_analyzed(view) == 10
        assert len(calls) == 4                      # after 10, 20, 40 and 80 rows
        assert audit_rows_analyzed(view) == 80
    finally:
        view.close()


def test_a_runner_starting_on_a_large_copy_leaves_its_statistics_until_it_may_have_doubled(env):
    first = open_view("audit", env)
    try:
        first.process(next(pages(1, [2000])))      # a copy of 2000 rows, analyzed after that page
    finally:
        first.close()
    view = open_view("audit", env)   # a restarted runner: its pages are a few pulls each
    try:
        calls = counted_analyses(view)
        follow = list(pages(2001, [5] * 40 + [1800]))
        for page in follow[:40]:
            view.process(page)
        # Counting this object's pages analyzed the 2000-row copy after its 1st, 2nd, 4th... page of 5 pulls.
        assert calls == [] and audit_rows_analyzed(view) == 2000
        view.process(follow[40])                    # 2000 written since: the copy may have doubled
        assert len(calls) == 1 and audit_rows_analyzed(view) == 4000
    finally:
        view.close()
