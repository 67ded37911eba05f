"""The Pulls application and its group commit: every pull durable before its response, many per transaction."""

from __future__ import annotations

import asyncio
import logging
import threading
from uuid import UUID

import anyio
import anyio.to_thread
from eventsourcing.application import Application

from application.errors import EventStoreUnavailable
from application.ports import Metrics, NoMetrics
from domain.pull import Pull

log = logging.getLogger(__name__)


class Pulls(Application[UUID]):
    """Pull events live in their own application so they never serialise with CacheRecords writes."""

    name = "Pulls"

    def record(self, *pulls: Pull) -> None:
        # Straight to the event store, in one transaction: Application.save() would first test every
        # aggregate against two runtime-checkable Protocols (typing's slow isinstance path), which was
        # ~9% of a warm pull's CPU in the profile. Pulls have no snapshots and no in-process followers,
        # so save()'s other steps do nothing here.
        self.events.put([event for pull in pulls for event in pull.collect_events()])


class GroupCommit:
    """Batches pulls: a writer task saves up to `max_batch` pulls in one transaction.

    A request awaits `record()`, which returns once its pull is in the event store. While one batch
    is being written the next one fills up, so the batch size adapts to the load.

    Every wait is bounded, so a database that hangs or refuses connections fails requests with
    EventStoreUnavailable (503) instead of holding them: a batch write is awaited `write_timeout`
    seconds, a request waits `wait_timeout`, and a full queue refuses at once. Writes run on threads
    of their own (never anyio's shared 40), at most `writer_threads` at a time, hung ones included.
    """

    def __init__(self, pulls: Pulls, max_batch: int = 1000, max_delay: float = 0.005,
                 metrics: Metrics | None = None, write_timeout: float = 5.0, wait_timeout: float = 6.0,
                 max_queued: int = 10_000, writer_threads: int = 2) -> None:
        self._pulls = pulls
        self._metrics = metrics or NoMetrics()
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._write_timeout = write_timeout
        self._wait_timeout = wait_timeout
        self._max_queued = max_queued
        self._queue: asyncio.Queue[tuple[Pull, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        # A writer thread that outlives its timeout keeps its slot until the database lets it go.
        self._slots = threading.BoundedSemaphore(writer_threads)
        self._threads = anyio.CapacityLimiter(writer_threads)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pulls-group-commit")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (at most `timeout` seconds: a dead database must not stop a shutdown)."""
        if self._task:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.error("stopping with %d pulls not recorded: the event store did not answer", self._queue.qsize())
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def record(self, pull: Pull) -> None:
        if self._queue.qsize() >= self._max_queued:
            raise EventStoreUnavailable(f"{self._queue.qsize()} pulls are waiting for the event store; "
                                        "try again shortly")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((pull, future))
        try:
            await asyncio.wait_for(future, self._wait_timeout)   # cancelled on timeout: the writer skips it
        except TimeoutError:
            raise EventStoreUnavailable("recording the pull timed out: the event store does not answer") from None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._max_delay
            while len(batch) < self._max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            try:
                await self._write(batch)
            except Exception as error:  # the requests learn of it; the writer keeps running
                if isinstance(error, EventStoreUnavailable):
                    log.error("recording %d pulls failed: %s", len(batch), error)   # an outage: no traceback per batch
                else:
                    log.exception("recording %d pulls failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for pull, future in batch:
                    # Counted once durable, like the counters view counts them from the events.
                    self._metrics.manifest_pulled(pull.org, pull.result)
                    if not future.done():
                        future.set_result(None)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[tuple[Pull, asyncio.Future]]) -> None:
        def write() -> None:
            # The slot is taken and given back by the thread itself, so a hung thread keeps it.
            if not self._slots.acquire(blocking=False):
                raise EventStoreUnavailable("every event store writer is stuck on the database; try again shortly")
            try:
                self._pulls.record(*(pull for pull, _ in batch))
            finally:
                self._slots.release()
        try:
            with anyio.fail_after(self._write_timeout):
                # Abandoned on timeout: a thread cannot be stopped, but it ends with the database call.
                await anyio.to_thread.run_sync(write, abandon_on_cancel=True, limiter=self._threads)
        except TimeoutError:
            raise EventStoreUnavailable(f"recording {len(batch)} pulls took over {self._write_timeout:g} s") from None
