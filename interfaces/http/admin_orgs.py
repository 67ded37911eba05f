"""Admin API: /api/v1/organizations — list, create, show, update (PUT replaces, PATCH merges) and delete."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.params import FromQuery as Query

from application.access_admin import AccessAdmin
from application.admin import CachedBlobRow, CachedTagRow, OrgAdmin, OrgDetails, OrgSummary
from application.prewarm import Prewarm, Prewarmed
from domain.access import Principal
from interfaces.http.admin_bodies import (OrgChangesBody, OrgCreateBody, OrgSettingsBody, PrewarmBody, fields_of,
                                          read_body)
from interfaces.http.admin_audit import checked_text
from interfaces.http.auth import global_admin_guard, org_admin_guard


class OrgList(msgspec.Struct):
    organizations: list[OrgSummary]


class TagPage(msgspec.Struct):
    items: list[CachedTagRow]
    next_cursor: str | None


class BlobPage(msgspec.Struct):
    items: list[CachedBlobRow]
    next_cursor: str | None


class PrewarmAnswer(msgspec.Struct):
    results: list[Prewarmed]



# The use cases do blocking event-store and view I/O: read handlers run in a thread, and writers
# read their body here (strictly, see admin_bodies) and then call the use case in a thread.
# Creating, listing and deleting orgs is the global admin's; an org's admins may show and change it.
# Every change is recorded in the admin log with its actor (never the password: only that it was set).
class OrganizationsController(Controller):
    path = "/organizations"
    tags = ["organizations"]

    @get("/", sync_to_thread=True, guards=[global_admin_guard])
    def list_organizations(self, admin: NamedDependency[OrgAdmin]) -> OrgList:
        return OrgList(admin.list())

    @post("/", guards=[global_admin_guard])
    async def create_organization(self, admin: NamedDependency[OrgAdmin], access_admin: NamedDependency[AccessAdmin],
                                  principal: NamedDependency[Principal], request: Request) -> OrgSummary:
        """Body: `{"name", "upstream", ...settings, "password"?}` (JSON, at most 64 KiB)."""
        settings = fields_of(await read_body(request, OrgCreateBody))
        name = settings.pop("name")
        created = await anyio.to_thread.run_sync(lambda: admin.create(name, settings, actor=principal.actor))
        await anyio.to_thread.run_sync(lambda: access_admin.record(principal.actor, "org.create", name, name,
                                                                   described(settings)))
        return created

    @get("/{name:str}", sync_to_thread=True, guards=[org_admin_guard])
    def show_organization(self, admin: NamedDependency[OrgAdmin], name: FromPath[str]) -> OrgDetails:
        """Settings and a summary of the cache (tags, repositories, blobs, bytes stored, pulls by result, last
        upstream rate limit) that stays the same size however much the org caches: see /tags and /blobs."""
        return admin.show(name)

    @get("/{name:str}/tags", sync_to_thread=True, guards=[org_admin_guard])
    def list_cached_tags(self, admin: NamedDependency[OrgAdmin], name: FromPath[str],
                         repository: Query[str | None] = None, cursor: Query[str | None] = None,
                         limit: Query[int] = 100) -> TagPage:
        """The org's cached tags by repository and tag (of one `repository` if given), `limit` (1-1000) per
        page; `next_cursor` asks for the next page, null on the last."""
        page = admin.tags(name, checked_text("cursor", cursor), limit, checked_text("repository", repository))
        return TagPage(page.items, page.next_cursor)

    @get("/{name:str}/blobs", sync_to_thread=True, guards=[org_admin_guard])
    def list_cached_blobs(self, admin: NamedDependency[OrgAdmin], name: FromPath[str],
                          cursor: Query[str | None] = None, limit: Query[int] = 100) -> BlobPage:
        """The org's cached blobs by digest (size, when cached, last pulled, pulls), `limit` (1-1000) per page."""
        page = admin.blobs(name, checked_text("cursor", cursor), limit)
        return BlobPage(page.items, page.next_cursor)

    @put("/{name:str}", guards=[org_admin_guard])
    async def replace_organization(self, admin: NamedDependency[OrgAdmin], access_admin: NamedDependency[AccessAdmin],
                                   principal: NamedDependency[Principal], request: Request,
                                   name: FromPath[str]) -> OrgSummary:
        """Body: every setting (absent ones go back to their defaults); an absent password keeps the stored one."""
        settings = fields_of(await read_body(request, OrgSettingsBody))
        updated = await anyio.to_thread.run_sync(lambda: admin.update(name, settings, replace=True))
        await anyio.to_thread.run_sync(lambda: access_admin.record(principal.actor, "org.replace", name, name,
                                                                   described(settings)))
        return updated

    @patch("/{name:str}", guards=[org_admin_guard])
    async def update_organization(self, admin: NamedDependency[OrgAdmin], access_admin: NamedDependency[AccessAdmin],
                                  principal: NamedDependency[Principal], request: Request,
                                  name: FromPath[str]) -> OrgSummary:
        """Body: only the settings to change."""
        changes = fields_of(await read_body(request, OrgChangesBody))
        updated = await anyio.to_thread.run_sync(lambda: admin.update(name, changes))
        await anyio.to_thread.run_sync(lambda: access_admin.record(principal.actor, "org.update", name, name,
                                                                   described(changes)))
        return updated

    @delete("/{name:str}", sync_to_thread=True, guards=[global_admin_guard])
    def delete_organization(self, admin: NamedDependency[OrgAdmin], access_admin: NamedDependency[AccessAdmin],
                            principal: NamedDependency[Principal], name: FromPath[str],
                            flush: Annotated[bool, QueryParameter(
                                description="flush everything the org caches (pinned images too) and delete it; "
                                            "without it an org that still caches images is refused (409)")] = False,
                            ) -> None:
        """A new org of the same name starts clean: nothing cached, pulls counted from zero."""
        report = admin.delete(name, flush=flush, actor=principal.actor)
        access_admin.org_deleted(name, principal.actor, flushed=None if report is None else
                                 f"flushed {report.images} images, {report.bytes} bytes")

    @post("/{name:str}/prewarm", status_code=200, guards=[org_admin_guard])
    async def prewarm(self, prewarm: NamedDependency[Prewarm], access_admin: NamedDependency[AccessAdmin],
                      principal: NamedDependency[Principal], request: Request, name: FromPath[str]) -> PrewarmAnswer:
        """Body: `{"references": ["REPOSITORY:TAG" | "REPOSITORY@DIGEST", ...]}`. Fetches each image (index,
        platform manifests, blobs) whatever `[server] pull_through` says; one result per reference."""
        body = await read_body(request, PrewarmBody)
        await anyio.to_thread.run_sync(lambda: access_admin.record(principal.actor, "org.prewarm", name, name,
                                                                   ", ".join(body.references)))
        return PrewarmAnswer(await prewarm.prewarm(name, body.references))


def described(settings: dict) -> str:
    """What an org change set, for the admin log: every setting by value, the password only as set or cleared."""
    shown = {key: value for key, value in settings.items() if key != "password"}
    if settings.get("password") is not None:
        shown["password"] = "(set)" if settings["password"] else "(cleared)"
    return ", ".join(f"{key}={value}" for key, value in sorted(shown.items()))
