"""Admin API: /api/v1/organizations — list, create, show, update (PUT replaces, PATCH merges) and delete."""

from __future__ import annotations

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from application.admin import OrgAdmin, OrgDetails, OrgSummary
from application.prewarm import Prewarm, Prewarmed
from interfaces.http.admin_bodies import (OrgChangesBody, OrgCreateBody, OrgSettingsBody, PrewarmBody, fields_of,
                                          read_body)


class OrgList(msgspec.Struct):
    organizations: list[OrgSummary]


class PrewarmAnswer(msgspec.Struct):
    results: list[Prewarmed]



# The use cases do blocking event-store and view I/O: read handlers run in a thread, and writers
# read their body here (strictly, see admin_bodies) and then call the use case in a thread.
class OrganizationsController(Controller):
    path = "/organizations"
    tags = ["organizations"]

    @get("/", sync_to_thread=True)
    def list_organizations(self, admin: NamedDependency[OrgAdmin]) -> OrgList:
        return OrgList(admin.list())

    @post("/")
    async def create_organization(self, admin: NamedDependency[OrgAdmin], request: Request) -> OrgSummary:
        """Body: `{"name", "upstream", ...settings, "password"?}` (JSON, at most 64 KiB)."""
        settings = fields_of(await read_body(request, OrgCreateBody))
        name = settings.pop("name")
        return await anyio.to_thread.run_sync(lambda: admin.create(name, settings))

    @get("/{name:str}", sync_to_thread=True)
    def show_organization(self, admin: NamedDependency[OrgAdmin], name: FromPath[str]) -> OrgDetails:
        """Settings, cached repositories and tags, bytes stored, pulls by result, last upstream rate limit."""
        return admin.show(name)

    @put("/{name:str}")
    async def replace_organization(self, admin: NamedDependency[OrgAdmin], request: Request, name: FromPath[str]) -> OrgSummary:
        """Body: every setting (absent ones go back to their defaults); an absent password keeps the stored one."""
        settings = fields_of(await read_body(request, OrgSettingsBody))
        return await anyio.to_thread.run_sync(lambda: admin.update(name, settings, replace=True))

    @patch("/{name:str}")
    async def update_organization(self, admin: NamedDependency[OrgAdmin], request: Request, name: FromPath[str]) -> OrgSummary:
        """Body: only the settings to change."""
        changes = fields_of(await read_body(request, OrgChangesBody))
        return await anyio.to_thread.run_sync(lambda: admin.update(name, changes))

    @delete("/{name:str}", sync_to_thread=True)
    def delete_organization(self, admin: NamedDependency[OrgAdmin], name: FromPath[str]) -> None:
        admin.delete(name)

    @post("/{name:str}/prewarm", status_code=200)
    async def prewarm(self, prewarm: NamedDependency[Prewarm], request: Request, name: FromPath[str]) -> PrewarmAnswer:
        """Body: `{"references": ["REPOSITORY:TAG" | "REPOSITORY@DIGEST", ...]}`. Fetches each image (index,
        platform manifests, blobs) whatever `[server] pull_through` says; one result per reference."""
        body = await read_body(request, PrewarmBody)
        return PrewarmAnswer(await prewarm.prewarm(name, body.references))
