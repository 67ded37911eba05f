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
    """One view's pages gathered in a bulk replay, written once `limit` events are in it.

    A full gathering is written behind (`write(behind=True)`): in a thread of its own, while the next one
    fills. A gathering's Python and its statements ran in turn before, so a view whose writes are long
    (analytics at 10M pulls: its statements at 100 % of a PostgreSQL backend, then its Python at ~94 % of a
    core, one after the other) had one of them idle at any time. One write at a time, in order: the next
    waits for the one in flight, as does any page written by itself (`write()`), so tracking never passes
    a lost gathering; its error is raised there.
    """

    def __init__(self, view: View, limit: int) -> None:
        self.view, self.limit = view, limit
        self.classes = frozenset(view.gathers)
        # A view that gathers every class it handles need not look at each event of its pages.
        self.every_class = self.classes >= frozenset(view.handles)
        self.gathered: Any = None
        self.events = 0
        self.last: Tracking | None = None
        self._flusher: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

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
            self.write(behind=True)
        return True

    def write(self, behind: bool = False) -> None:
        """Write what is gathered with its last event's tracking, in one transaction; then start afresh.
        After the write in flight; `behind`: in the flushing thread, returning at once."""
        self.wait()
        if self.last is not None:
            work = (self.gathered, self.last, self.events)
            if behind:
                if self._flusher is None:
                    self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"flush-{self.view.name}")
                self._in_flight = self._flusher.submit(self.view.process_gathered, *work)
            else:
                self.view.process_gathered(*work)
        self.gathered, self.events, self.last = None, 0, None

    def wait(self) -> None:
        """Until the write in flight is done; raises its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def close(self) -> None:
        """Stop: the write in flight is waited for (a process that stops must not leave it half done)."""
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)


class ViewWriter:
    """One view's writes in a thread of its own, in page order, at most `depth` pages behind the reader.

    After a failed write nothing more is written (a later page would move the tracking past the lost
    one): the error is raised to the caller at its next `write` or at `finish`.
    """

    def __init__(self, view: View, gather_events: int, depth: int = 2, log: str = "") -> None:
        self.view, self.depth = view, depth
        scale = view.gathering_scales.get(log, view.gathering_scale)   # log: the application replayed
        self.gathering = Gathering(view, gather_events * scale) if gather_events and view.gathers else None
        # Spent writing, in the writer's thread: with gatherings written behind, gathering and waiting for the
        # write in flight (the view's own path through the replay), not the behind writes themselves.
        self.seconds = 0.0
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
        if self.gathering is not None:
            self.gathering.close()

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
