"""Probes: /healthz (the process answers) and /readyz (the components a replica needs), without auth."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
from litestar import Response, get
from litestar.di import NamedDependency

from application.ports import BlobStore
from infra.persistence import check_event_store

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0          # a probe answers in time even when a component hangs
LAGGING = 1000               # notifications behind: worth saying, not worth taking the replica out
# A state, or a state and more keys for the answer (the read model's lag).
Check = Callable[[], Awaitable["str | tuple[str, dict]"]]
# A component in one of these states still serves, but worse (a lagging read model, storage running short).
DEGRADED = ("lagging", "low")
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


class Unavailable(Exception):
    """A component that answered, but cannot serve; `details` still go into the report."""

    def __init__(self, message: str, details: dict) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Probe:
    """One component /readyz asks about: `check` answers its state ("ok", "lagging", ...) or raises."""

    name: str
    check: Check
    required: bool = True   # unavailable: the replica is unavailable (else only degraded)


@get("/readyz", exclude_from_auth=True)
async def readyz(probes: NamedDependency[list[Probe]]) -> Response:
    report = await readiness(probes)
    return Response(report, status_code=503 if report["status"] == "unavailable" else 200)


async def readiness(probes: list[Probe]) -> dict:
    """{"status": ready | degraded | unavailable, one state per component, "errors": {...}}."""
    report: dict = {}
    errors: dict[str, str] = {}
    status = "ready"
    for probe in probes:
        try:
            with anyio.fail_after(CHECK_SECONDS):
                answer = await probe.check()
        except Exception as error:  # a probe reports failures, it never raises them
            answer = "unavailable", getattr(error, "details", {})
            errors[probe.name] = str(error) or type(error).__name__
            log.warning("readiness: %s unavailable: %s", probe.name, errors[probe.name])
        state, details = (answer, {}) if isinstance(answer, str) else answer
        report[probe.name] = state
        report.update(details)
        if state == "unavailable" and probe.required:
            status = "unavailable"
        elif (state == "unavailable" or state in DEGRADED) and status == "ready":
            status = "degraded"
    return {"status": status, **report, **({"errors": errors} if errors else {})}


def event_store_check(env: dict[str, str], records) -> Check:
    async def event_store() -> str:
        await _in_thread(check_event_store, env, records)
        return "ok"
    return event_store


def read_model_check(runners) -> Check:
    async def read_model() -> tuple[str, dict]:
        statuses = await _in_thread(runners.status)
        if not statuses:
            return "external", {}  # runners in another process (`entrepot projections run`)
        lag = max(s.lag for s in statuses)
        crashed = [f"{s.projection} ({s.application}): {s.error}" for s in statuses if s.state == "crashed"]
        if crashed:
            raise Unavailable("crashed projection(s): " + "; ".join(crashed), {"read_model_lag": lag})
        return ("lagging" if lag > LAGGING else "ok"), {"read_model_lag": lag}
    return read_model


def blob_storage_check(store: BlobStore) -> Check:
    async def blob_storage() -> str:
        return await store.check() or "ok"   # "low" when free space runs short; raises when full
    return blob_storage


def quota_check(evictor) -> Check:
    """Orgs whose pinned images alone exceed their quota: said here, serving goes on (status stays ready)."""
    async def quota() -> str | tuple[str, dict]:
        over = dict(evictor.over_quota)
        return ("pinned_over_quota", {"pinned_over_quota": over}) if over else "ok"
    return quota


def coordination_check(coordination) -> Check:
    return coordination.check   # "ok" or "not configured" (in-process only)
