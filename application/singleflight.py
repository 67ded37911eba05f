"""Single-flight: concurrent callers of the same key share one run of the work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from application.ports import FillCoordinator

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[object, asyncio.Task[T]] = {}

    async def run(self, key: object, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        # shield: a caller that goes away does not cancel the work the others wait for
        return await asyncio.shield(task)


class InProcessOnly:
    """The coordinator of a lone replica: every lock is granted at once."""

    async def claim(self, key: str) -> InProcessOnly:
        return self

    async def wait_released(self, key: str) -> bool:
        return True

    async def release(self) -> None:
        pass


class AcrossReplicas:
    """Single-flight between replicas, through the coordinator that single-flights blob fills.

    The replica that takes the lock of `key` does the work; the others wait for it to let go,
    then look for its result (`done_elsewhere`, e.g. the manifest it stored and the tag it shared)
    and do the work themselves only if there is none (the holder failed, died or was too slow).
    For manifests this is what keeps a rollout on N replicas from spending N upstream pulls.
    """

    def __init__(self, coordinator: FillCoordinator) -> None:
        self._coordinator = coordinator

    async def run(self, key: str, work: Callable[[], Awaitable[T]],
                  done_elsewhere: Callable[[], Awaitable[T | None]]) -> T:
        lock = await self._coordinator.claim(key)
        if lock is None:
            await self._coordinator.wait_released(key)
            found = await done_elsewhere()
            if found is not None:
                return found
        try:
            return await work()
        finally:
            if lock is not None:
                await lock.release()
