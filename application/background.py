"""Waiting and stopping in the background tasks (evictor, group commit, traffic reports) without losing a cancellation.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives in the loop iteration in which
what it waits for completes: the result wins, and a background loop cancelled at that moment runs on
after its stop() (seen as teardown hangs: a fill's nudge woke the evictor just as the server stopped).
`asyncio.timeout` does not, so the loops wait with it. And a stop() that waits for its cancelled task
must let its own caller's cancellation (a shutdown deadline) through.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended.

    The task's CancelledError ends here; the caller's own (a deadline on the stop) goes on up, where a
    bare `suppress(CancelledError)` would swallow it and the caller would wait on past its deadline.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether `event` is set within `timeout` seconds (None: no limit); a cancellation always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
