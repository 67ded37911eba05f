"""Admin API: POST /api/v1/organizations/{name}/simulate — the org's recorded pulls replayed under a quota."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from application.what_if import WhatIf
from domain.org_settings import MAX_QUOTA
from domain.what_if import POLICIES
from interfaces.http.admin_audit import parse_time
from interfaces.http.admin_bodies import read_body
from interfaces.http.auth import org_admin_guard


class SimulateBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`{"quota_bytes": 10737418240, "policies": ["lru", "lfu", "gdsf"], "since": "30d"}`"""

    quota_bytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_QUOTA)]
    policies: Annotated[list[Annotated[str, msgspec.Meta(max_length=16)]],
                        msgspec.Meta(min_length=1, max_length=len(POLICIES))] = msgspec.field(
                            default_factory=lambda: ["lru", "lfu"])
    since: Annotated[str, msgspec.Meta(max_length=64)] | None = None


@post("/organizations/{name:str}/simulate", status_code=200, tags=["retention"], guards=[org_admin_guard])
async def simulate(what_if: NamedDependency[WhatIf], request: Request, name: FromPath[str]) -> dict:
    """Replay the org's recorded pulls since `since` (default: all) through each policy with that quota:
    hit ratio, upstream bytes and evictions per policy, beside what really happened. Changes nothing."""
    body = await read_body(request, SimulateBody)
    since = parse_time(body.since, "since", what_if.now())
    report = await anyio.to_thread.run_sync(
        lambda: what_if.simulate(name, body.quota_bytes, body.policies, since))
    return report.as_dict()
