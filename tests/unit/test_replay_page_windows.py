"""The pages a replay reads from the event store (infra/projection_runtime/archived_pages.py `pages`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from infra.projection_runtime.archived_pages import pages


class Recorder:
    """select_notifications over an in-memory log (as eventsourcing's recorders answer it), recording each query."""

    def __init__(self, log: list[SimpleNamespace]) -> None:
        self.log, self.queries = log, []

    def select_notifications(self, start, limit, stop=None, topics=(), *, inclusive_of_start=True):
        self.queries.append((start, stop, limit))
        rows = [n for n in self.log if (n.id > start if not inclusive_of_start else n.id >= start)
                and (stop is None or n.id <= stop) and (not topics or n.topic in topics)]
        return rows[:limit]


def log_of(ids: list[int], every_other_topic: bool = False) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=i, topic="b" if every_other_topic and i % 3 == 0 else "a") for i in ids]


def read(log, topics, page_size, start=0, stop=None):
    recorder = Recorder(log)
    app = SimpleNamespace(name="Pulls", recorder=recorder)
    got = [[n.id for n in page.notifications] for page in pages(app, None, start, page_size, stop or log[-1].id, topics)]
    return got, recorder.queries


@pytest.mark.parametrize("topics", [[], ["a"]])
def test_pages_hold_page_size_events_of_the_topics_in_order_whatever_the_gaps(topics):
    ids = [*range(1, 40), *range(100, 130), 500, *range(1000, 1010)]   # gaps, as a sequence leaves them
    log = log_of(ids, every_other_topic=True)
    wanted = [n.id for n in log if not topics or n.topic in topics]
    got, _ = read(log, topics, 10)
    assert [i for page in got for i in page] == wanted
    assert all(len(page) == 10 for page in got[:-1]) and 0 < len(got[-1]) <= 10


def test_a_filtered_query_covers_at_most_a_page_of_positions():
    # Unbounded, PostgreSQL planned a scan and sort of every position up to the head for each page.
    log = log_of(list(range(1, 1001)), every_other_topic=True)
    _, queries = read(log, ["a"], 50)
    assert queries and all(stop - start <= 50 for start, stop, _ in queries)


def test_an_unfiltered_replay_reads_up_to_the_head_in_page_size_queries():
    log = log_of(list(range(1, 1001)))
    got, queries = read(log, [], 100, start=250)
    assert [i for page in got for i in page] == list(range(251, 1001))
    assert len(queries) == 8 and all(stop == 1000 for _, stop, _ in queries)
