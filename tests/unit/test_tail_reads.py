"""Shared tail reads: the workers of one log take one select's page while it is still the tail, and never
a page that may miss something (a commit since, a page cut at its limit, too old, another application's)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from infra.commit_signals import COMMITS
from infra.projection_runtime import tail_reads
from infra.projection_runtime.tail_reads import TailReads


class Log:
    """A log's notifications and the selects made of it."""

    def __init__(self, last: int) -> None:
        self.key = ("test", object())   # a log of its own: COMMITS' generations are process-wide
        self.last = last
        self.selects: list[tuple[int, int]] = []

    def select(self, start: int, limit: int) -> list[SimpleNamespace]:
        self.selects.append((start, limit))
        return [SimpleNamespace(id=i) for i in range(start + 1, min(self.last, start + limit) + 1)]

    def commit(self, count: int = 1) -> None:
        self.last += count
        COMMITS.committed(self.key)


def ids(page) -> list[int]:
    return [n.id for n in page.notifications]


def test_the_workers_a_commit_woke_share_one_select():
    log, tails = Log(5), TailReads()
    first = tails.read(log.key, "Pulls", log.select, 0, 500)
    second = tails.read(log.key, "Pulls", log.select, 0, 500)
    assert ids(first) == ids(second) == [1, 2, 3, 4, 5]
    assert log.selects == [(0, 500)]
    # A worker that already took part of the page gets the rest of it.
    assert ids(tails.read(log.key, "Pulls", log.select, 3, 500)) == [4, 5]
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == []
    assert log.selects == [(0, 500)]


def test_a_commit_since_the_select_makes_the_page_stale():
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    log.commit()
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == [6]
    assert log.selects == [(0, 500), (5, 500)]


def test_another_process_announcing_a_write_makes_the_page_stale():
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    log.last += 1
    COMMITS.announced(log.key)   # a NOTIFY from another process
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == [6]


def test_a_page_older_than_the_share_window_is_read_again(monkeypatch):
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    log.last += 1   # written by another process that nobody signalled: found by the next select
    monkeypatch.setattr(tail_reads, "SHARE_SECONDS", 0.0)
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == [6]


def test_a_page_cut_at_its_limit_answers_only_within_it():
    log, tails = Log(20), TailReads()
    assert ids(tails.read(log.key, "Pulls", log.select, 0, 10)) == list(range(1, 11))
    assert ids(tails.read(log.key, "Pulls", log.select, 0, 4)) == [1, 2, 3, 4]   # within it
    assert log.selects == [(0, 10)]
    # What follows the cut is unknown to the page: selected.
    assert ids(tails.read(log.key, "Pulls", log.select, 6, 10)) == list(range(7, 17))
    assert log.selects == [(0, 10), (6, 10)]


def test_a_worker_behind_the_tail_reads_its_own_pages_and_keeps_the_tail():
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 3, 500)          # the caught-up workers' tail page
    assert ids(tails.read(log.key, "Pulls", log.select, 0, 2)) == [1, 2]   # a rebuilding worker
    assert ids(tails.read(log.key, "Pulls", log.select, 3, 500)) == [4, 5]
    assert log.selects == [(3, 500), (0, 2)]


def test_a_worker_ahead_of_a_kept_page_does_not_take_it():
    """A page read before this worker's own later read may not be the tail any more."""
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    log.last = 8   # written meanwhile, and already read by this worker through a select of its own
    assert ids(tails.read(log.key, "Pulls", log.select, 7, 500)) == [8]


def test_an_empty_page_answers_only_its_own_start():
    log, tails = Log(5), TailReads()
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == []
    assert ids(tails.read(log.key, "Pulls", log.select, 5, 500)) == []
    assert log.selects == [(5, 500)]
    log.last = 7
    assert ids(tails.read(log.key, "Pulls", log.select, 6, 500)) == [7]


def test_two_applications_never_share_a_page_even_under_one_log_key():
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    tails.read(log.key, "Registry", log.select, 0, 500)
    assert log.selects == [(0, 500), (0, 500)]


def test_a_shared_page_is_decoded_once():
    log, tails = Log(4), TailReads()
    decoded: list[int] = []

    def decode(n):
        decoded.append(n.id)
        return ("event", n.id)

    first = tails.read(log.key, "Pulls", log.select, 0, 500)
    rest = tails.read(log.key, "Pulls", log.select, 2, 500)
    assert first.events(decode) == [("event", 1), ("event", 2), ("event", 3), ("event", 4)]
    assert rest.events(decode) == [("event", 3), ("event", 4)]
    assert decoded == [1, 2, 3, 4]


def test_a_worker_takes_no_page_selected_before_it_began():
    """A page read by the workers of an earlier run may predate what was done to the store since (a view
    cleared and rebuilt over an edited or archived store): a new worker selects for itself."""
    log, tails = Log(5), TailReads()
    tails.read(log.key, "Pulls", log.select, 0, 500)
    began = time.monotonic()
    assert ids(tails.read(log.key, "Pulls", log.select, 0, 500, since=began)) == [1, 2, 3, 4, 5]
    assert log.selects == [(0, 500), (0, 500)]
    # Its own page, and pages read after it began, it takes.
    assert ids(tails.read(log.key, "Pulls", log.select, 2, 500, since=began)) == [3, 4, 5]
    assert log.selects == [(0, 500), (0, 500)]
