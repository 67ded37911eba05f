"""The Pulls application and its group commit: many pulls per transaction, and none lost to a short outage."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from uuid import UUID

import anyio
import anyio.to_thread
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from application.background import cancel_and_wait
from application.deadlines import Deadlines
from application.errors import EventStoreUnavailable, PullKept
from application.ports import Metrics, NoMetrics
from application.pull_backlog import PendingPull, PullBacklog
from domain.pull import Pull

log = logging.getLogger(__name__)

# The event store is down, slow or refusing: worth trying again later. Anything else is a bug.
OUTAGE_ERRORS = (EventStoreUnavailable, OperationalError, InterfaceError, TimeoutError)


class Pulls(Application[UUID]):
    """Pull events live in their own application so they never serialise with CacheRecords writes."""

    name = "Pulls"

    def record(self, *pulls: Pull) -> None:
        self.write([event for pull in pulls for event in pull.collect_events()])

    def write(self, events: Sequence) -> None:
        # Straight to the event store, in one transaction: Application.save() would first test every
        # aggregate against two runtime-checkable Protocols (typing's slow isinstance path), which was
        # ~9% of a warm pull's CPU in the profile. Pulls have no snapshots and no in-process followers,
        # so save()'s other steps do nothing here.
        self.events.put(list(events))


class GroupCommit:
    """Batches pulls: a writer task saves up to `max_batch` pulls in one transaction.

    A request awaits `record()`, which returns once its pull is in the event store. While one batch
    is being written the next one fills up, so the batch size adapts to the load.

    Every wait is bounded: a batch write is awaited `write_timeout` seconds, a request waits
    `wait_timeout`, and a full queue refuses at once. Writes run on threads of their own (never
    anyio's shared 40), at most `writer_threads` at a time, hung ones included.

    When the event store is unavailable, `record()` raises PullKept (an EventStoreUnavailable) and the
    pull is not lost: it joins a bounded backlog (PullBacklog) that the writer retries, oldest first,
    before any newer pull, until the event store takes writes again. While there is a backlog,
    `record()` answers at once. A pull a request stopped waiting for stays queued the same way.
    Only a full queue (`max_queued`, while a write hangs) or a full backlog loses pulls, counted.
    """

    def __init__(self, pulls: Pulls, max_batch: int = 1000, max_delay: float = 0.005,
                 metrics: Metrics | None = None, write_timeout: float = 5.0, wait_timeout: float = 6.0,
                 max_queued: int = 10_000, writer_threads: int = 2, max_backlog: int = 100_000,
                 backlog: PullBacklog | None = None) -> None:
        self._pulls = pulls
        self._metrics = metrics or NoMetrics()
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._last_batch = 1   # pulls in the batch before: 1 means light traffic, written without a window
        self._write_timeout = write_timeout
        self._wait_timeout = wait_timeout
        self._max_queued = max_queued
        self._queue: asyncio.Queue[PendingPull] = asyncio.Queue()
        self._backlog = backlog or PullBacklog(max_backlog, self._metrics)
        self._task: asyncio.Task | None = None
        self._deadlines = Deadlines(wait_timeout, lambda: PullKept(
            "recording the pull timed out: the event store does not answer; the pull is kept and recorded "
            "once it does"))
        # A writer thread that outlives its timeout keeps its slot until the database lets it go.
        self._slots = threading.BoundedSemaphore(writer_threads)
        self._threads = anyio.CapacityLimiter(writer_threads)

    @property
    def wait_bound(self) -> float:
        """The longest `record()` waits: then it raises PullKept, and the pull stays with the writer."""
        return self._wait_timeout

    @property
    def backlog(self) -> int:
        """Pulls served but not yet in the event store, kept for when it takes writes again."""
        return len(self._backlog)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pulls-group-commit")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued and kept, for at most `timeout` seconds (a dead database must not stop
        a shutdown); what is still unwritten then is logged and counted as lost."""
        if not self._task:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            pass
        await cancel_and_wait(self._task)
        self._task = None
        # The writer is gone: what it had not taken joins the backlog behind the rest, in order.
        left: list[PendingPull] = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        self._backlog.keep(left)
        while len(self._backlog) and (remaining := deadline - loop.time()) > 0:
            await self._flush(write_timeout=min(self._write_timeout, remaining))
            if len(self._backlog):
                await asyncio.sleep(min(self._backlog.seconds_to_retry(), max(0.0, deadline - loop.time())))
        lost = self._backlog.lose_all("shutdown")
        self._deadlines.close()
        if lost:
            log.error("stopping with %d pulls not recorded: the event store did not take them within %g s "
                      "(last error: %s)", lost, timeout, self._backlog.last_error)

    async def record(self, pull: Pull | Pull.Recorded) -> None:
        """Returns once the pull is in the event store. Raises PullKept when it is not there yet but
        kept to be written later, and EventStoreUnavailable when it could not even be queued."""
        if self._queue.qsize() >= self._max_queued:
            self._metrics.pulls_unrecorded(1, "queue_full")
            raise EventStoreUnavailable(f"{self._queue.qsize()} pulls are waiting for the event store; "
                                        "try again shortly")
        if len(self._backlog):
            # The event store is known to be down: waiting would only delay the answer.
            self._queue.put_nowait(PendingPull.of(pull))
            raise PullKept(f"the event store is unavailable ({self._backlog.last_error}); the pull is kept "
                           "and recorded once it takes writes again")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(PendingPull.of(pull, future))
        # Bounded by the shared timer (PullKept after wait_timeout); the writer still has the pull.
        self._deadlines.add(future)
        await future

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            settled = False   # durable, kept, or failed for good
            try:
                if len(self._backlog) and self._backlog.seconds_to_retry() <= 0:
                    await self._flush()
                if len(self._backlog):
                    self._keep(batch)   # behind the older ones: pulls reach the event store in order
                    settled = True
                elif batch:
                    await self._write_fresh(batch)
                    settled = True
            except asyncio.CancelledError:
                if not settled:   # stopped in the middle: stop() writes them with the rest
                    self._backlog.keep(batch)
                raise
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _next_batch(self) -> list[PendingPull]:
        """Up to `max_batch` queued pulls, or none when it is time to retry the backlog."""
        loop = asyncio.get_running_loop()
        try:
            first = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            wait = max(0.001, self._backlog.seconds_to_retry()) if len(self._backlog) else None
            try:
                # Not wait_for: it can swallow the stop's cancellation (application/background.py).
                async with asyncio.timeout(wait):
                    first = await self._queue.get()
            except TimeoutError:
                return []
        batch = [first]
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if len(batch) == 1 and self._last_batch == 1:
            # Light traffic (a lone pull after a lone batch): the window would only delay the answer,
            # as it did every manifest of a cold pull. Under load the previous write gathers the next
            # batch, and the window below adds the stragglers.
            return batch
        # The window closes once as many pulls are in as the last batch had, else after max_delay: the
        # clients that were answered by the last write are back (a fleet pulling in a loop, or wrk's
        # connections), and waiting out the rest of the window only delayed all of them — at 32 warm
        # pulls in flight it was about a third of each write cycle. Traffic that grows fills the window
        # and the next batch waits for more; traffic that falls closes it on time with fewer.
        # One timeout for the whole window, not wait_for per pull (a task and a timer each). A get()
        # the timeout cancels takes no item: Queue.get() removes it only once it has woken.
        enough = min(self._max_batch, self._last_batch)
        try:
            async with asyncio.timeout_at(loop.time() + self._max_delay):
                while len(batch) < enough:
                    while len(batch) < enough and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    if len(batch) < enough:
                        batch.append(await self._queue.get())
        except TimeoutError:
            pass
        while len(batch) < self._max_batch and not self._queue.empty():   # and whoever else is waiting
            batch.append(self._queue.get_nowait())
        self._last_batch = len(batch)
        return batch

    async def _write_fresh(self, batch: list[PendingPull]) -> None:
        try:
            await self._store(batch, self._write_timeout)
        except OUTAGE_ERRORS as error:
            log.error("recording %d pulls failed, kept to retry: %s", len(batch), error)  # no traceback per batch
            self._backlog.failed(error)
            self._keep(batch)
        except Exception as error:  # not an outage: the requests learn of it; the writer keeps running
            log.exception("recording %d pulls failed", len(batch))
            for entry in batch:
                if entry.future and not entry.future.done():
                    entry.future.set_exception(error)
        else:
            self._durable(batch)

    async def _flush(self, write_timeout: float | None = None) -> None:
        """Writes the backlog, oldest first, until it is empty or a write fails (then retried later)."""
        written = 0
        try:
            while len(self._backlog):
                chunk = self._backlog.oldest(self._max_batch)
                try:
                    await self._store(chunk, write_timeout or self._write_timeout)
                except Exception as error:   # an outage, or a bug: either way kept, retried with a back-off
                    self._backlog.failed(error)
                    if not isinstance(error, OUTAGE_ERRORS):
                        log.exception("recording %d kept pulls failed", len(chunk))
                    return
                self._backlog.written(len(chunk))
                self._durable(chunk)
                written += len(chunk)
        finally:
            if written:
                log.warning("the event store takes writes again: %d kept pulls recorded, %d still kept",
                            written, len(self._backlog))

    async def _store(self, entries: list[PendingPull], write_timeout: float) -> None:
        """One transaction; if some are stored already (a write that timed out had committed after all),
        one at a time, skipping those: never twice."""
        try:
            await self._write([event for entry in entries for event in entry.events], write_timeout)
        except IntegrityError:
            for entry in entries:
                try:
                    await self._write(entry.events, write_timeout)
                except IntegrityError:
                    log.info("a kept pull of %s/%s was stored by an earlier write that timed out; not "
                             "written twice", entry.pull.org, entry.pull.repository)

    def _keep(self, batch: list[PendingPull]) -> None:
        self._backlog.keep(batch)
        for entry in batch:
            if entry.future and not entry.future.done():
                entry.future.set_exception(PullKept(f"the event store is unavailable ({self._backlog.last_error}); "
                                                    "the pull is kept and recorded once it takes writes again"))

    def _durable(self, entries: list[PendingPull]) -> None:
        for entry in entries:
            # Counted once durable, like the counters view counts them from the events.
            self._metrics.manifest_pulled(entry.pull.org, entry.pull.result)
            if entry.future and not entry.future.done():
                entry.future.set_result(None)

    async def _write(self, events: list, write_timeout: float) -> None:
        def write() -> None:
            # The slot is taken and given back by the thread itself, so a hung thread keeps it.
            if not self._slots.acquire(blocking=False):
                raise EventStoreUnavailable("every event store writer is stuck on the database; try again shortly")
            try:
                self._pulls.write(events)
            finally:
                self._slots.release()
        try:
            with anyio.fail_after(write_timeout):
                # Abandoned on timeout: a thread cannot be stopped, but it ends with the database call.
                await anyio.to_thread.run_sync(write, abandon_on_cancel=True, limiter=self._threads)
        except TimeoutError:
            raise EventStoreUnavailable(f"recording {len(events)} pulls took over {write_timeout:g} s") from None
