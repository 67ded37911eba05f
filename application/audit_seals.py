"""Seals of the audit chain: record the chain heads as an `AuditSeal` event, export it, and list the seals.

Seals are recorded in the Access application, so each seal is itself a link of the Access chain:
removing or editing a seal breaks the chain like any admin event. An operator ships each exported
seal (the CLI prints it; `[audit] seal_file` gets one JSON line per seal) somewhere the cache's
operators cannot write; an auditor later runs `entrepot audit verify` and compares the seals it
lists with the shipped ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from application.ports import Clock
from domain.audit_chain import AuditSeal, ChainHead
from application.background import cancel_and_wait

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
SEAL_TOPIC = get_topic(AuditSeal.Sealed)
_SCAN = 1000


class ChainRead(Protocol):
    """The chain view (projections/chain.py) as seals and verification read it."""

    def head(self, application: str) -> ChainHead: ...

    def heads(self) -> list[ChainHead]: ...

    def links(self, application: str, after: int = 0, limit: int = 1000) -> list[Any]: ...


@dataclass(frozen=True)
class SealRecord:
    id: str                  # the seal's id (what `audit verify --since` takes)
    position: int            # its notification id in the Access log
    heads: list[ChainHead]
    actor: str
    at: float

    def as_dict(self) -> dict:
        return {"seal": self.id, "position": self.position, "actor": self.actor, "at": self.at,
                "heads": [h.as_dict() for h in self.heads]}

    def head(self, application: str) -> ChainHead | None:
        return next((h for h in self.heads if h.application == application), None)


def read_seals(access: Application, after: int = 0) -> list[SealRecord]:
    """Every seal in the Access log after notification id `after`, oldest first."""
    found, start = [], after + 1
    while True:
        page = access.recorder.select_notifications(start=start, limit=_SCAN, topics=[SEAL_TOPIC])
        for notification in page:
            event = access.mapper.to_domain_event(notification)
            found.append(SealRecord(str(event.originator_id), notification.id,
                                    [ChainHead(**h) for h in event.heads], event.actor, event.at))
        if len(page) < _SCAN:
            return found
        start = page[-1].id + 1


class AuditSeals:
    """Records seals of what the chain view holds, on demand and (`start()`) every `interval` seconds."""

    def __init__(self, access: Application, chain: ChainRead, clock: Clock,
                 export: Callable[[dict], None] | None = None, interval: float = 0.0,
                 settled: Callable[[], None] | None = None) -> None:
        self._access, self._chain, self._clock = access, chain, clock
        self._settled = settled   # waits (bounded) for the chain view to reach the logs' heads
        self._export = export
        self._interval = interval
        self._last: list[ChainHead] | None = None    # the heads this process last sealed
        self._last_position = 0                        # and that seal's own position in the Access log
        self._task: asyncio.Task | None = None

    def seal(self, actor: str, settle: bool = False) -> SealRecord:
        """Seal what the chain view holds; with `settle`, first let it catch up (an operator's seal
        should cover the events recorded before it was asked for)."""
        if settle and self._settled is not None:
            self._settled()
        heads = self._chain.heads()
        seal = AuditSeal(heads=[h.as_dict() for h in heads], actor=actor, at=self._clock.now())
        recordings = self._access.save(seal)
        record = SealRecord(str(seal.id), recordings[-1].notification.id, heads, actor, seal.at)
        self._last, self._last_position = heads, record.position
        if self._export is not None:
            try:
                self._export(record.as_dict())
            except OSError as error:   # the seal is recorded; the operator must hear that the copy failed
                log.error("seal %s recorded but not exported: %s", record.id, error)
        return record

    def seals(self) -> list[SealRecord]:
        return read_seals(self._access)

    def seal_if_moved(self) -> SealRecord | None:
        """The periodic seal: only when a chain moved since this process's last seal. The seal itself
        moves the Access chain, so the Access head at that seal (or its own position) is no movement."""
        heads = self._chain.heads()
        if self._last is not None and all(self._unmoved(h) for h in heads):
            return None
        return self.seal(SYSTEM_ACTOR)

    def _unmoved(self, head: ChainHead) -> bool:
        before = next((h for h in self._last or () if h.application == head.application), None)
        if before is None:
            return False
        allowed = {before.position} | ({self._last_position} if head.application == "Access" else set())
        return head.position in allowed

    async def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="audit-seals")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)   # lets a deadline on this stop through (application/background.py)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                record = await anyio.to_thread.run_sync(self.seal_if_moved)
                if record is not None:
                    log.info("audit seal %s: %s", record.id, ", ".join(
                        f"{h.application} {h.count} events to {h.position} head {h.link[:16]}" for h in record.heads))
            except Exception:   # the next period tries again
                log.exception("recording the periodic audit seal failed")
