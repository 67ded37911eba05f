"""The evictor's background task: woken when a fill completes (and on a timer for the reaper), one
process at a time across replicas through an exclusive lock; never on the request path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio.to_thread

from application.background import cancel_and_wait, wait_set
from application.eviction import Evictor, RoundReport

log = logging.getLogger(__name__)


class ExclusiveLock(Protocol):
    """Held by one process of the cluster at a time (PostgreSQL advisory lock, or in-process)."""

    def acquire(self) -> bool:
        """Take it without waiting; False when another process holds it (or it cannot be asked)."""

    def release(self) -> None: ...

    def close(self) -> None:
        """Let go for good (the process stops)."""


# A nudged round starts once the nudges have stopped for SETTLE seconds (at most MAX_SETTLE after the
# first): one round after a pull's fills instead of one per fill. Each round costs its thread hops and
# view queries, and on a small machine they took CPU from the very pull whose fills nudged them.
SETTLE = 0.25
MAX_SETTLE = 2.0


class EvictionService:
    def __init__(self, evictor: Evictor, lock: ExclusiveLock, *, interval: float = 15.0) -> None:
        self.evictor, self.lock, self.interval = evictor, lock, interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._round = asyncio.Lock()   # rounds of this process never overlap (timer, nudge, admin flush)
        self._stopping = False

    def nudge(self) -> None:
        """A fill completed: maybe over quota now. Costs the request nothing."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="evictor")

    async def stop(self) -> None:
        # A round waiting for the views gives up at once; the loop ends even if a cancellation were lost.
        self._stopping = True
        self.evictor.interrupt()
        self._wake.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        async with self._round:   # a round under way finishes first
            await anyio.to_thread.run_sync(self.lock.close)

    async def run_round(self) -> RoundReport | None:
        """One round under the cluster lock; None when another process holds it."""
        async with self._round:
            if not await anyio.to_thread.run_sync(self.lock.acquire):
                return None
            try:
                return await self.evictor.run_once()
            finally:
                await anyio.to_thread.run_sync(self.lock.release)

    async def _loop(self) -> None:
        delay = 0.0
        while True:
            nudged = await wait_set(self._wake, delay or self.interval)   # not wait_for: see application/background.py
            if self._stopping:
                return
            self._wake.clear()
            if nudged and not delay:
                await self._settle()
                if self._stopping:
                    return
            delay = 0.0
            try:
                report = await self.run_round()
            except Exception:   # a database or storage outage: the next round tries again
                log.exception("eviction round failed")
                continue
            if report is not None and (report.skipped or report.evicted):
                delay = 0.5   # let the view catch up, then check again (still over, or the reaper's turn)

    async def _settle(self) -> None:
        """Wait until no nudge came for SETTLE seconds, or MAX_SETTLE passed since the first."""
        deadline = asyncio.get_running_loop().time() + MAX_SETTLE
        while not self._stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await wait_set(self._wake, min(SETTLE, left)):
                return
            self._wake.clear()


class NudgingLedger:
    """The Ledger, plus a nudge to the evictor once a manifest or blob is recorded as cached."""

    def __init__(self, ledger: Any, nudge: Callable[[], None]) -> None:
        self._ledger, self._nudge = ledger, nudge

    async def manifest_cached(self, *args: Any, **kwargs: Any) -> None:
        await self._ledger.manifest_cached(*args, **kwargs)
        self._nudge()

    async def blob_cached(self, *args: Any, **kwargs: Any) -> None:
        await self._ledger.blob_cached(*args, **kwargs)
        self._nudge()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)
