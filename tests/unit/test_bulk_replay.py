"""The bulk replay's machinery (infra/projection_runtime/bulk.py) with a fake view: order, failures, read-ahead."""

from __future__ import annotations

import threading

import pytest
from eventsourcing.persistence import Tracking

from infra.projection_runtime.bulk import ViewWriter, read_ahead


class Pulled:
    """An event class the fake view gathers."""


class Dropped:
    """An event class it handles but writes page by page."""


class FakeView:
    name = "fake"
    handles = (Pulled, Dropped)
    gathers = (Pulled,)
    gathering_scale = 1
    gathering_scales: dict[str, int] = {}

    def __init__(self, fail_on: int | None = None) -> None:
        self.written: list[tuple[str, list[int], int]] = []   # (how, positions, tracked at)
        self.fail_on = fail_on

    def gathering(self) -> list[int]:
        return []

    def gather(self, gathered: list[int], event, tracking: Tracking) -> None:
        gathered.append(tracking.notification_id)

    def process_gathered(self, gathered: list[int], tracking: Tracking, events: int = 1) -> None:
        self.written.append(("gathered", list(gathered), tracking.notification_id))

    def process(self, batch) -> None:
        if batch[-1][1].notification_id == self.fail_on:
            raise RuntimeError("disk full")
        self.written.append(("page", [t.notification_id for _, t in batch], batch[-1][1].notification_id))


def page(kind: type, first: int, last: int) -> list:
    return [(kind(), Tracking("Pulls", n)) for n in range(first, last + 1)]


def test_pages_are_gathered_up_to_the_limit_and_a_page_it_cannot_gather_writes_what_came_before_first():
    view = FakeView()
    writer = ViewWriter(view, gather_events=4)
    for batch in (page(Pulled, 1, 2), page(Pulled, 3, 5), page(Pulled, 6, 6), page(Dropped, 7, 8),
                  page(Pulled, 9, 9)):
        writer.write(batch)
    writer.finish()
    writer.close()
    assert view.written == [("gathered", [1, 2, 3, 4, 5], 5), ("gathered", [6], 6), ("page", [7, 8], 8),
                            ("gathered", [9], 9)]


def test_a_view_gathers_each_log_by_its_own_scale():
    class ScaledView(FakeView):
        gathering_scale = 3                  # the pulls: a row per key
        gathering_scales = {"Registry": 1}   # the Registry log: rows per event

    written = {}
    for log in ("Pulls", "Registry"):
        view = ScaledView()
        writer = ViewWriter(view, gather_events=2, log=log)
        for first in range(1, 13, 2):
            writer.write(page(Pulled, first, first + 1))
        writer.finish()
        writer.close()
        written[log] = [positions for _, positions, _ in view.written]
    assert written["Pulls"] == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    assert written["Registry"] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]


def test_after_a_failed_write_nothing_more_is_written_and_the_error_reaches_the_caller():
    view = FakeView(fail_on=6)
    writer = ViewWriter(view, gather_events=0)
    with pytest.raises(RuntimeError, match="disk full"):
        for first in range(1, 20, 3):
            writer.write(page(Dropped, first, first + 2))
        writer.finish()
    writer.close()
    # Pages 7-9 and later would move the tracking past the lost page 4-6: none of them is written.
    assert view.written == [("page", [1, 2, 3], 3)]


def test_a_gathering_written_behind_that_fails_stops_the_writes_after_it_and_reaches_the_caller():
    class FailingGatherings(FakeView):
        def process_gathered(self, gathered, tracking, events=1):
            if tracking.notification_id == 4:
                raise RuntimeError("disk full")
            super().process_gathered(gathered, tracking, events)

    view = FailingGatherings()
    writer = ViewWriter(view, gather_events=2)
    with pytest.raises(RuntimeError, match="disk full"):
        for batch in (page(Pulled, 1, 2), page(Pulled, 3, 4), page(Pulled, 5, 6), page(Dropped, 7, 7)):
            writer.write(batch)
        writer.finish()
    writer.close()
    # Written behind, one at a time and in order: nothing after the failed gathering reaches the view.
    assert view.written == [("gathered", [1, 2], 2)]


def test_read_ahead_yields_in_order_and_raises_the_producers_error():
    def produce():
        yield from range(5)
        raise ValueError("bad page")

    seen = []
    with pytest.raises(ValueError, match="bad page"):
        for item in read_ahead(produce()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def produce():
        for n in range(1000):
            produced.append(n)
            yield n

    for item in read_ahead(produce(), depth=2):
        if item == 3:
            break
    assert len(produced) < 10
    assert not any(t.name == "replay-read-ahead" for t in threading.enumerate())


def test_a_rebuild_turns_the_cycle_collector_off_and_back_on_even_when_it_fails():
    import gc

    from infra.projection_runtime.rebuild import REBUILD_COLLECTS_CYCLES, collecting_less

    assert not REBUILD_COLLECTS_CYCLES and gc.isenabled()
    with pytest.raises(RuntimeError):
        with collecting_less():
            assert not gc.isenabled()
            raise RuntimeError("a failed rebuild")
    assert gc.isenabled()
    # Overlapping rebuilds (threads): the collector comes back when the last one ends, not the first.
    first, second = collecting_less(), collecting_less()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
    # A process that had it off keeps it off.
    gc.disable()
    try:
        with collecting_less():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


class ClearedView:
    """A view whose clear waits for the others' (a barrier): only clears running at once get past it."""

    def __init__(self, name: str, barrier: threading.Barrier, fail: bool = False) -> None:
        self.name, self.barrier, self.fail, self.done = name, barrier, fail, []

    def clear(self) -> None:
        self.barrier.wait(timeout=10)
        if self.fail:
            raise RuntimeError(f"{self.name}: disk full")
        self.done.append("clear")

    def drop_indexes(self) -> None:
        self.done.append("drop_indexes")


def test_views_are_cleared_at_once_each_in_a_thread_and_the_first_error_is_raised():
    from infra.projection_runtime.bulk import clear_views

    barrier = threading.Barrier(3)
    views = [ClearedView(name, barrier) for name in ("chain", "audit", "analytics")]
    clear_views(views, drop_indexes=True)
    assert [view.done for view in views] == [["clear", "drop_indexes"]] * 3
    barrier = threading.Barrier(2)
    views = [ClearedView("chain", barrier), ClearedView("audit", barrier, fail=True)]
    with pytest.raises(RuntimeError, match="audit: disk full"):
        clear_views(views, drop_indexes=False)
    assert views[0].done == ["clear"]
