"""The projections by name: which applications each follows and which view class each backend uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from application.pulls import Pulls
from application.registry import Registry
from projections import datastores
from projections.audit import AuditProjection, PostgresAuditView, SqliteAuditView
from projections.base import SqliteView, View, ViewProjection
from projections.blobs import BlobsProjection, PostgresBlobsView, SqliteBlobsView
from projections.counters import CountersProjection, PostgresCountersView, SqliteCountersView
from projections.manifests import ManifestsProjection, PostgresManifestsView, SqliteManifestsView
from projections.orgs import OrgsProjection, PostgresOrgsView, SqliteOrgsView
from projections.postgres_view import PostgresView
from projections.tags import PostgresTagsView, SqliteTagsView, TagsProjection

SQLITE, POSTGRES = "eventsourcing.sqlite", "eventsourcing.postgres"


@dataclass(frozen=True)
class ProjectionSpec:
    projection: type[ViewProjection]
    applications: tuple[type[Application], ...]
    sqlite_view: type[SqliteView]
    postgres_view: type[PostgresView]

    @property
    def name(self) -> str:
        return self.projection.name


CATALOG: dict[str, ProjectionSpec] = {spec.name: spec for spec in (
    ProjectionSpec(TagsProjection, (Registry,), SqliteTagsView, PostgresTagsView),
    ProjectionSpec(ManifestsProjection, (Registry,), SqliteManifestsView, PostgresManifestsView),
    ProjectionSpec(BlobsProjection, (Registry, Pulls), SqliteBlobsView, PostgresBlobsView),
    ProjectionSpec(AuditProjection, (Pulls,), SqliteAuditView, PostgresAuditView),
    ProjectionSpec(CountersProjection, (Pulls,), SqliteCountersView, PostgresCountersView),
    ProjectionSpec(OrgsProjection, (Registry,), SqliteOrgsView, PostgresOrgsView),
)}
PROJECTION_NAMES = tuple(CATALOG)


class UnknownProjection(KeyError):
    """A projection name that is not in the catalog."""


def spec(name: str) -> ProjectionSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownProjection(f"unknown projection {name!r}; known: {', '.join(PROJECTION_NAMES)}") from None


def projection_env(name: str, env: dict | None) -> Environment:
    """The environment a view is configured from, exactly as ProjectionRunner builds it."""
    return Environment(name, {**os.environ, **(env or {})})


def backend(env: dict | None, name: str = "") -> str:
    """The persistence module of a projection's view (or of the apps, without a name)."""
    return projection_env(name, env).get("PERSISTENCE_MODULE", "")


def is_postgres(env: dict | None) -> bool:
    return backend(env) == POSTGRES


def view_class(name: str, env: dict | None) -> type[View]:
    module = backend(env, name)
    if module == SQLITE:
        return spec(name).sqlite_view
    if module == POSTGRES:
        return spec(name).postgres_view
    raise NotImplementedError(f"projection {name!r}: no view for PERSISTENCE_MODULE={module!r}")


def open_view(name: str, env: dict | None, version: int | None = None, follow_live: bool = True) -> View:
    """The view, outside any runner (rebuild, status, reads); creates its tables if missing. Close it.

    On PostgreSQL: writes go to `version` (default: the live one); reads follow the live version
    unless `follow_live` is False. SQLite has one version only.
    """
    cls = view_class(name, env)
    if not issubclass(cls, PostgresView):
        return InfrastructureFactory.construct(env=projection_env(name, env)).tracking_recorder(cls)
    datastore = datastores.acquire({**os.environ, **(env or {})})
    try:
        view = cls(datastore, version=version, follow_live=follow_live)
        view.create_table()
    except BaseException:
        datastores.release(datastore)
        raise
    return view
