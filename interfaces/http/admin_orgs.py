"""Admin API: /api/v1/organizations — list, create, show, update (PUT replaces, PATCH merges) and delete."""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from application.admin import OrgAdmin, OrgDetails, OrgSummary
from domain.org import DEFAULT_MAX_STALE, DEFAULT_NEGATIVE_CACHE, DEFAULT_STALENESS


class OrgSettingsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An org's settings; the password is write-only (null keeps the stored one on update, "" clears it)."""

    upstream: str
    namespace: str = ""
    staleness_seconds: int = DEFAULT_STALENESS
    max_stale_seconds: int = DEFAULT_MAX_STALE
    negative_cache_seconds: int = DEFAULT_NEGATIVE_CACHE
    on_upstream_denied: str = "serve-stale"
    rate_limit_floor: int = 0
    username: str = ""
    password: str | None = None
    default: bool = False


class OrgCreateBody(OrgSettingsBody, forbid_unknown_fields=True, kw_only=True):
    name: str


class OrgChangesBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields present change."""

    upstream: str | msgspec.UnsetType = msgspec.UNSET
    namespace: str | msgspec.UnsetType = msgspec.UNSET
    staleness_seconds: int | msgspec.UnsetType = msgspec.UNSET
    max_stale_seconds: int | msgspec.UnsetType = msgspec.UNSET
    negative_cache_seconds: int | msgspec.UnsetType = msgspec.UNSET
    on_upstream_denied: str | msgspec.UnsetType = msgspec.UNSET
    rate_limit_floor: int | msgspec.UnsetType = msgspec.UNSET
    username: str | msgspec.UnsetType = msgspec.UNSET
    password: str | None | msgspec.UnsetType = msgspec.UNSET
    default: bool | msgspec.UnsetType = msgspec.UNSET


class OrgList(msgspec.Struct):
    organizations: list[OrgSummary]


def fields_of(body: msgspec.Struct) -> dict:
    return {name: value for name in body.__struct_fields__
            if (value := getattr(body, name)) is not msgspec.UNSET}


def admin_of(state: State) -> OrgAdmin:
    return state.admin


# The use cases do blocking event-store and view I/O, hence sync handlers run in a thread.
class OrganizationsController(Controller):
    path = "/organizations"
    tags = ["organizations"]

    @get("/", sync_to_thread=True)
    def list_organizations(self, state: State) -> OrgList:
        return OrgList(admin_of(state).list())

    @post("/", sync_to_thread=True)
    def create_organization(self, state: State, data: JSONBody[OrgCreateBody]) -> OrgSummary:
        settings = fields_of(data)
        return admin_of(state).create(settings.pop("name"), settings)

    @get("/{name:str}", sync_to_thread=True)
    def show_organization(self, state: State, name: FromPath[str]) -> OrgDetails:
        """Settings, cached repositories and tags, bytes stored, pulls by result, last upstream rate limit."""
        return admin_of(state).show(name)

    @put("/{name:str}", sync_to_thread=True)
    def replace_organization(self, state: State, name: FromPath[str], data: JSONBody[OrgSettingsBody]) -> OrgSummary:
        return admin_of(state).update(name, fields_of(data), replace=True)

    @patch("/{name:str}", sync_to_thread=True)
    def update_organization(self, state: State, name: FromPath[str], data: JSONBody[OrgChangesBody]) -> OrgSummary:
        return admin_of(state).update(name, fields_of(data))

    @delete("/{name:str}", sync_to_thread=True)
    def delete_organization(self, state: State, name: FromPath[str]) -> None:
        admin_of(state).delete(name)
