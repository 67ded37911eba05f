"""Admin API of retention: an org's images in eviction order, flush, pins, and the eviction log."""

from __future__ import annotations

from typing import Annotated, Any

import dataclasses

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery as Query, QueryParameter

from application.admin import InvalidRequest
from application.retention_admin import CacheRetention
from domain.analytics import ALL_GENERATIONS
from domain.names import MAX_NAME_LENGTH
from interfaces.http.admin_analytics import generation_of
from interfaces.http.admin_audit import checked_text, iso
from interfaces.http.admin_bodies import read_body

ADMIN_ACTOR = "admin"   # the one admin token; access control (issue 9) may name admins later
Text = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]


class FlushBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    repository: Text | None = None
    tag: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    dry_run: bool = False


class PinBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    repository: Text
    tag: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    digest: Annotated[str, msgspec.Meta(max_length=200)] | None = None


def image_item(image: Any) -> dict:
    return {"repository": image.repository, "digest": image.digest, "tags": image.tags, "bytes": image.bytes,
            "last_pull": iso(image.last_used) if image.last_used else None, "pull_count": image.pull_count,
            "pinned": image.pinned}


def log_item(entry: Any) -> dict:
    return {"id": entry.id, "kind": entry.kind, "org": entry.org, "repository": entry.repository,
            "digest": entry.digest, "tags": [t for t in entry.tags.split(",") if t], "bytes": entry.bytes,
            "reason": entry.reason, "policy": entry.policy, "actor": entry.actor, "at": iso(entry.at),
            "dry_run": entry.dry_run, "generation": entry.generation}


class RetentionController(Controller):
    path = "/organizations/{name:str}"
    tags = ["retention"]

    @get("/images", sync_to_thread=True)
    def images(self, retention: NamedDependency[CacheRetention], name: FromPath[str],
               order: Annotated[str, QueryParameter(description="eviction: the order they would be evicted "
                                                               "(pinned last)")] = "eviction",
               cursor: Query[str | None] = None, limit: Query[int] = 100) -> dict:
        if order != "eviction":
            raise InvalidRequest("order must be eviction", {"order": "eviction"})
        page = retention.images(name, checked_text("cursor", cursor), limit)
        return {"policy": page.policy, "items": [image_item(i) for i in page.images], "next_cursor": page.next_cursor}

    @post("/flush", status_code=200)
    async def flush(self, retention: NamedDependency[CacheRetention], request: Request, name: FromPath[str]) -> dict:
        """Body: `{"repository"?, "tag"?, "dry_run"?}`; without repository the whole org. Pinned images stay."""
        body = await read_body(request, FlushBody)
        report = await anyio.to_thread.run_sync(lambda: retention.flush(
            name, body.repository, body.tag, dry_run=body.dry_run, actor=ADMIN_ACTOR))
        return dataclasses.asdict(report)

    @post("/pins", status_code=200)
    async def pin(self, retention: NamedDependency[CacheRetention], request: Request, name: FromPath[str]) -> dict:
        """Body: `{"repository", "tag"}` or `{"repository", "digest"}`: that image is never evicted."""
        body = await read_body(request, PinBody)
        pinned = await anyio.to_thread.run_sync(lambda: retention.pin(
            name, body.repository, body.tag, body.digest, pinned=True, actor=ADMIN_ACTOR))
        return pin_item(pinned)

    @delete("/pins", status_code=200)
    async def unpin(self, retention: NamedDependency[CacheRetention], request: Request, name: FromPath[str]) -> dict:
        """Body as for POST: the image may be evicted again."""
        body = await read_body(request, PinBody)
        unpinned = await anyio.to_thread.run_sync(lambda: retention.pin(
            name, body.repository, body.tag, body.digest, pinned=False, actor=ADMIN_ACTOR))
        return pin_item(unpinned)

    @get("/pins", sync_to_thread=True)
    def pins(self, retention: NamedDependency[CacheRetention], name: FromPath[str]) -> dict:
        return {"pins": [pin_item(p) for p in retention.pins(name)]}


def pin_item(pin: Any) -> dict:
    return {"repository": pin.repository, "digest": pin.digest, "tags": pin.tags, "bytes": pin.bytes}


@get("/audit/evictions", tags=["audit"], sync_to_thread=True)
def evictions(retention: NamedDependency[CacheRetention], org: Query[str | None] = None,
              kind: Annotated[str | None, QueryParameter(description="eviction, flush, pin or unpin")] = None,
              cursor: Query[str | None] = None, limit: Query[int] = 100,
              generation: Annotated[str | None, QueryParameter(
                  description="which org of the name: a number from 1; every generation when absent")] = None) -> dict:
    """What left the cache (evictions and flushes, dry runs included) and pins, newest first; each
    entry's `generation` says which org of the name it happened to."""
    chosen = generation_of(generation)
    rows, next_cursor = retention.log(checked_text("org", org), checked_text("kind", kind),
                                      checked_text("cursor", cursor), limit,
                                      generation=None if chosen == ALL_GENERATIONS else chosen)
    return {"items": [log_item(row) for row in rows], "next_cursor": next_cursor}
