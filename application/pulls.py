"""The Pulls application and its group commit: every pull durable before its response, many per transaction."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import anyio.to_thread
from eventsourcing.application import Application

from application.ports import Metrics, NoMetrics
from domain.pull import Pull

log = logging.getLogger(__name__)


class Pulls(Application[UUID]):
    """Pull events live in their own application so they never serialise with Registry writes."""

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
    """

    def __init__(self, pulls: Pulls, max_batch: int = 1000, max_delay: float = 0.005,
                 metrics: Metrics | None = None) -> None:
        self._pulls = pulls
        self._metrics = metrics or NoMetrics()
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._queue: asyncio.Queue[tuple[Pull, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pulls-group-commit")

    async def stop(self) -> None:
        if self._task:
            await self._queue.join()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def record(self, pull: Pull) -> None:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((pull, future))
        await future

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
                await anyio.to_thread.run_sync(self._pulls.record, *(pull for pull, _ in batch))
            except Exception as error:  # the requests learn of it; the writer keeps running
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
