"""Admin API: robots and org admins of an org (/api/v1/organizations/{name}/robots, /admins) and the admin log."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.params import FromQuery as Query
from litestar.exceptions import PermissionDeniedException

from application.access import AdminLogRow, NewCredentials, RobotInfo
from application.access_admin import AccessAdmin
from domain.access import MAX_PATTERN, MAX_PATTERNS, MAX_ROBOT_NAME, Principal, Role
from interfaces.http.admin_audit import checked_text, iso
from interfaces.http.admin_bodies import read_body
from interfaces.http.auth import global_admin_guard, org_admin_guard

Pattern = Annotated[str, msgspec.Meta(max_length=MAX_PATTERN)]
Patterns = Annotated[list[Pattern], msgspec.Meta(max_length=MAX_PATTERNS)]
_STRUCT = {"forbid_unknown_fields": True, "kw_only": True}


class RobotCreateBody(msgspec.Struct, **_STRUCT):
    name: Annotated[str, msgspec.Meta(max_length=MAX_ROBOT_NAME)]
    repositories: Patterns = []
    all_cached: bool = False       # also every repository the org holds right now (expanded and recorded)


class RepositoriesBody(msgspec.Struct, **_STRUCT):
    repositories: Patterns = []
    all_cached: bool = False


class OrgAdminCreateBody(msgspec.Struct, **_STRUCT):
    name: Annotated[str, msgspec.Meta(max_length=MAX_ROBOT_NAME)]


class RobotList(msgspec.Struct):
    robots: list[RobotInfo]


class AdminLogItem(msgspec.Struct):
    id: int
    actor: str
    action: str
    org: str
    target: str
    detail: str
    at: str


class AdminLogPage(msgspec.Struct):
    items: list[AdminLogItem]
    next_cursor: str | None


class RobotsController(Controller):
    """Every route here is for the org's admins (or the global admin): org_admin_guard."""

    path = "/organizations/{name:str}"
    tags = ["robots"]
    guards = [org_admin_guard]

    @post("/robots", status_code=201)
    async def create_robot(self, access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
                           request: Request, name: FromPath[str]) -> NewCredentials:
        """Body: `{"name", "repositories": [patterns], "all_cached"?}` → `{"username": "<org>+<name>", "token"}`.
        The token is shown once: only a slow hash of it is stored."""
        body = await read_body(request, RobotCreateBody)
        return await anyio.to_thread.run_sync(lambda: access_admin.create_robot(
            name, body.name, body.repositories, principal.actor, all_cached=body.all_cached))

    @get("/robots", sync_to_thread=True)
    def list_robots(self, access_admin: NamedDependency[AccessAdmin], name: FromPath[str]) -> RobotList:
        return RobotList(access_admin.robots(name))

    @get("/robots/{robot:str}", sync_to_thread=True)
    def show_robot(self, access_admin: NamedDependency[AccessAdmin], name: FromPath[str],
                   robot: FromPath[str]) -> RobotInfo:
        return access_admin.robot(name, robot)

    @put("/robots/{robot:str}/repositories")
    async def set_repositories(self, access_admin: NamedDependency[AccessAdmin],
                               principal: NamedDependency[Principal], request: Request, name: FromPath[str],
                               robot: FromPath[str]) -> RobotInfo:
        """Body: `{"repositories": [patterns], "all_cached"?}`: the robot's patterns from now on."""
        body = await read_body(request, RepositoriesBody)
        return await anyio.to_thread.run_sync(lambda: access_admin.set_repositories(
            name, robot, body.repositories, principal.actor, all_cached=body.all_cached))

    @post("/robots/{robot:str}/rotate", status_code=200, sync_to_thread=True)
    def rotate_robot(self, access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
                     name: FromPath[str], robot: FromPath[str]) -> NewCredentials:
        """A new token (shown once); the old one stops working."""
        return access_admin.rotate(name, robot, principal.actor)

    @post("/robots/{robot:str}/disable", status_code=200, sync_to_thread=True)
    def disable_robot(self, access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
                      name: FromPath[str], robot: FromPath[str]) -> RobotInfo:
        return access_admin.disable(name, robot, principal.actor)

    @post("/robots/{robot:str}/enable", status_code=200, sync_to_thread=True)
    def enable_robot(self, access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
                     name: FromPath[str], robot: FromPath[str]) -> RobotInfo:
        return access_admin.disable(name, robot, principal.actor, disabled=False)

    @delete("/robots/{robot:str}", sync_to_thread=True)
    def delete_robot(self, access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
                     name: FromPath[str], robot: FromPath[str]) -> None:
        access_admin.delete(name, robot, principal.actor)

    @post("/admins", status_code=201, guards=[global_admin_guard])
    async def create_org_admin(self, access_admin: NamedDependency[AccessAdmin],
                               principal: NamedDependency[Principal], request: Request,
                               name: FromPath[str]) -> NewCredentials:
        """Body: `{"name"}` → credentials that administer this org only (its settings and robots), and
        pull all of it. Listed, rotated, disabled and deleted with the robots. Global admin only."""
        body = await read_body(request, OrgAdminCreateBody)
        return await anyio.to_thread.run_sync(lambda: access_admin.create_robot(
            name, body.name, [], principal.actor, role=Role.ORG_ADMIN))


@get("/admin-log", tags=["audit"], sync_to_thread=True)
def admin_log(access_admin: NamedDependency[AccessAdmin], principal: NamedDependency[Principal],
              org: Query[str | None] = None, actor: Query[str | None] = None, cursor: Query[str | None] = None,
              limit: Query[int] = 100) -> AdminLogPage:
    """Every admin action with its actor, oldest first. An org admin sees its own org's only."""
    checked_text("org", org)
    checked_text("actor", actor)
    checked_text("cursor", cursor)
    if principal.role is not Role.ADMIN:
        if org not in (None, principal.org):
            raise PermissionDeniedException(f"{principal.actor} administers organization {principal.org} only")
        org = principal.org
    rows, next_cursor = access_admin.log(org, actor, cursor, limit)
    return AdminLogPage([item(row) for row in rows], next_cursor)


def item(row: AdminLogRow) -> AdminLogItem:
    return AdminLogItem(row.id, row.actor, row.action, row.org, row.target, row.detail, iso(row.at))
