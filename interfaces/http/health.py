"""Probes: /healthz (the process answers) and /readyz (the components a replica needs), without auth."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from litestar import Response, get
from litestar.datastructures import State

from infra.persistence import check_event_store

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0          # a probe answers in time even when a component hangs
LAGGING = 1000               # notifications behind: worth saying, not worth taking the replica out
# A replica without these cannot serve correctly; without Redis it serves, uncoordinated.
REQUIRED = ("event_store", "read_model", "blob_storage")
PROBE_THREADS = 8
# Probes run on threads of their own (per event loop): when database calls hang on anyio's shared 40,
# a probe must not queue behind them (it would time out and blame the wrong component).
_probe_threads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def _in_thread(call, *args):
    loop = asyncio.get_running_loop()
    limiter = _probe_threads.get(loop) or _probe_threads.setdefault(loop, anyio.CapacityLimiter(PROBE_THREADS))
    # Abandoned on timeout: the probe answers; the thread ends with its (bounded) database call.
    return await anyio.to_thread.run_sync(call, *args, abandon_on_cancel=True, limiter=limiter)


@get("/healthz", exclude_from_auth=True, sync_to_thread=False)
def healthz() -> dict:
    return {"status": "ok"}


@get("/readyz", exclude_from_auth=True)
async def readyz(state: State) -> Response:
    report = await readiness(state.container)
    return Response(report, status_code=503 if report["status"] == "unavailable" else 200)


async def readiness(container) -> dict:
    """{"status": ready | degraded | unavailable, one state per component, "errors": {...}}."""
    report: dict = {}
    errors: dict[str, str] = {}

    async def probe(name: str, check: Callable[[], Awaitable[str]]) -> None:
        try:
            with anyio.fail_after(CHECK_SECONDS):
                report[name] = await check()
        except Exception as error:  # a probe reports failures, it never raises them
            report[name] = "unavailable"
            errors[name] = str(error) or type(error).__name__
            log.warning("readiness: %s unavailable: %s", name, errors[name])

    async def event_store() -> str:
        await _in_thread(check_event_store, container.env, container.records)
        return "ok"

    async def read_model() -> str:
        statuses = await _in_thread(container.runners.status)
        if not statuses:
            return "external"  # runners in another process (`entrepot projections run`)
        report["read_model_lag"] = max(s.lag for s in statuses)
        crashed = [f"{s.projection} ({s.application}): {s.error}" for s in statuses if s.state == "crashed"]
        if crashed:
            raise RuntimeError("crashed projection(s): " + "; ".join(crashed))
        return "lagging" if report["read_model_lag"] > LAGGING else "ok"

    async def blob_storage() -> str:
        return await container.store.check() or "ok"   # "low" when free space runs short; raises when full

    await probe("event_store", event_store)
    await probe("read_model", read_model)
    await probe("blob_storage", blob_storage)
    await probe("redis", container.coordination.check)
    if any(report[name] == "unavailable" for name in REQUIRED):
        status = "unavailable"
    elif report["redis"] == "unavailable" or report["read_model"] == "lagging" or report["blob_storage"] == "low":
        status = "degraded"
    else:
        status = "ready"
    return {"status": status, **report, **({"errors": errors} if errors else {})}
