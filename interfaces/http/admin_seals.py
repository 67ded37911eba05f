"""Admin API: /api/v1/audit/seals — seal the audit chain now, and list the seals recorded."""

from __future__ import annotations

import anyio.to_thread
from litestar import get, post
from litestar.di import NamedDependency

from application.audit_seals import AuditSeals
from domain.access import Principal
from interfaces.http.admin_audit import iso
from interfaces.http.auth import global_admin_guard


def seal_item(seal) -> dict:
    item = seal.as_dict()
    item["at"] = iso(seal.at)
    return item


@post("/audit/seals", tags=["audit"], guards=[global_admin_guard], status_code=201)
async def seal_now(audit_seals: NamedDependency[AuditSeals], principal: NamedDependency[Principal]) -> dict:
    """Record a seal of the audit chain now (its heads: position, count, last link per application)."""
    seal = await anyio.to_thread.run_sync(lambda: audit_seals.seal(principal.actor, settle=True))
    return seal_item(seal)


@get("/audit/seals", tags=["audit"], guards=[global_admin_guard])
async def list_seals(audit_seals: NamedDependency[AuditSeals]) -> dict:
    """Every seal recorded, oldest first."""
    seals = await anyio.to_thread.run_sync(audit_seals.seals)
    return {"items": [seal_item(seal) for seal in seals]}
