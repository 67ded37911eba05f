"""The machinery of a bulk replay: pages gathered per view, each view's writes in a thread, pages read ahead."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from eventsourcing.persistence import Tracking

from projections.base import View


class Gathering:
    """One view's pages gathered in a bulk replay, written once `limit` events are in it."""

    def __init__(self, view: View, limit: int) -> None:
        self.view, self.limit = view, limit
        self.classes = frozenset(view.gathers)
        # A view that gathers every class it handles need not look at each event of its pages.
        self.every_class = self.classes >= frozenset(view.handles)
        self.gathered: Any = None
        self.events = 0
        self.last: Tracking | None = None

    def add(self, batch: Sequence[tuple[Any, Tracking]]) -> bool:
        """Gather the page; False (nothing gathered) when the view cannot gather one of its events."""
        if not self.every_class and not self.classes.issuperset({type(event) for event, _ in batch}):
            return False
        if self.gathered is None:
            self.gathered = self.view.gathering()
        gather, gathered = self.view.gather, self.gathered
        for event, tracking in batch:
            gather(gathered, event, tracking)
        self.events += len(batch)
        self.last = batch[-1][1]
        if self.events >= self.limit:
            self.write()
        return True

    def write(self) -> None:
        """Write what is gathered with its last event's tracking, in one transaction; then start afresh."""
        if self.last is not None:
            self.view.process_gathered(self.gathered, self.last, self.events)
        self.gathered, self.events, self.last = None, 0, None


class ViewWriter:
    """One view's writes in a thread of its own, in page order, at most `depth` pages behind the reader.

    After a failed write nothing more is written (a later page would move the tracking past the lost
    one): the error is raised to the caller at its next `write` or at `finish`.
    """

    def __init__(self, view: View, gather_events: int, depth: int = 2) -> None:
        self.view, self.depth = view, depth
        self.gathering = Gathering(view, gather_events) if gather_events and view.gathers else None
        self.seconds = 0.0          # spent writing, in the writer's thread
        self._failed = False
        self._pending: deque[Future] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replay-{view.name}")

    def write(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(self._timed, self._write, batch))

    def finish(self) -> None:
        """Write what is gathered, wait for every write; raises the first error."""
        if self.gathering is not None:
            self._pending.append(self._executor.submit(self._timed, self.gathering.write))
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Stop: pages not yet begun are dropped, the one being written is waited for."""
        self._failed = True
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _write(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        gathering = self.gathering
        if gathering is None or not gathering.add(batch):
            if gathering is not None:
                gathering.write()   # what came before this page, before it
            # One transaction per page and view, tracked at the view's last event of the page.
            self.view.process(batch)

    def _timed(self, write, *args: Any) -> None:
        if self._failed:
            return
        started = time.perf_counter()
        try:
            write(*args)
        except BaseException:
            self._failed = True
            raise
        finally:
            self.seconds += time.perf_counter() - started


def clear_views(views: Sequence[View], drop_indexes: bool) -> None:
    """Clear the views (and drop their secondary indexes, for a bulk load), each in a thread. Emptying a large
    SQLite view frees every page of its tables, which SQLite reads first: seconds of I/O and C code without
    the GIL per view at 1M pulls (audit 3.1 s, chain 1.5 s alone at load ~9), which one after the other
    delayed the start of the replay by their sum. Raises the first error once all are done."""
    def clear(view: View) -> None:
        view.clear()   # rows and tracking in one transaction: a failed rebuild restarts from scratch
        if drop_indexes:
            # Made again at the end; a rebuild killed before that leaves them to the view's next opening.
            view.drop_indexes()

    with ThreadPoolExecutor(max_workers=max(1, len(views)), thread_name_prefix="clear-views") as pool:
        futures = [pool.submit(clear, view) for view in views]
    for future in futures:
        future.result()


def restore_indexes(views: Sequence[View]) -> dict[str, float]:
    """Make the views' dropped indexes again, each view in a thread (the databases sort in parallel, without
    the GIL); returns each view's seconds. Raises the first error once all are done."""
    def timed(view: View) -> float:
        started = time.perf_counter()
        view.restore_indexes()
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=max(1, len(views)), thread_name_prefix="restore-indexes") as pool:
        futures = [(view.name, pool.submit(timed, view)) for view in views]
    return {name: future.result() for name, future in futures}


T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The items of `items`, produced in a thread up to `depth` ahead of the consumer.

    The producer's errors are raised to the consumer; a consumer that stops early stops the producer
    at its next item (it holds nothing but the iterator's own resources, which are closed with it).
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                ready.put(item)
            ready.put(_DONE)
        except BaseException as error:   # handed to the consumer, which raises it
            ready.put(error)

    thread = threading.Thread(target=produce, name="replay-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():   # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
