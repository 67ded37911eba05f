"""The projections by name: which applications each follows and which view class each backend uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from application.pulls import Pulls
from application.registry import Registry
from projections.audit import AuditProjection, SqliteAuditView
from projections.base import SqliteView, View, ViewProjection
from projections.blobs import BlobsProjection, SqliteBlobsView
from projections.counters import CountersProjection, SqliteCountersView
from projections.manifests import ManifestsProjection, SqliteManifestsView
from projections.orgs import OrgsProjection, SqliteOrgsView
from projections.tags import SqliteTagsView, TagsProjection


@dataclass(frozen=True)
class ProjectionSpec:
    projection: type[ViewProjection]
    applications: tuple[type[Application], ...]
    sqlite_view: type[SqliteView]      # a postgres_view joins here when that backend exists

    @property
    def name(self) -> str:
        return self.projection.name


CATALOG: dict[str, ProjectionSpec] = {spec.name: spec for spec in (
    ProjectionSpec(TagsProjection, (Registry,), SqliteTagsView),
    ProjectionSpec(ManifestsProjection, (Registry,), SqliteManifestsView),
    ProjectionSpec(BlobsProjection, (Registry, Pulls), SqliteBlobsView),
    ProjectionSpec(AuditProjection, (Pulls,), SqliteAuditView),
    ProjectionSpec(CountersProjection, (Pulls,), SqliteCountersView),
    ProjectionSpec(OrgsProjection, (Registry,), SqliteOrgsView),
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


def view_class(name: str, env: dict | None) -> type[View]:
    module = projection_env(name, env).get("PERSISTENCE_MODULE", "")
    if module == "eventsourcing.sqlite":
        return spec(name).sqlite_view
    raise NotImplementedError(f"projection {name!r}: no view for PERSISTENCE_MODULE={module!r} yet (SQLite only)")


def open_view(name: str, env: dict | None) -> View:
    """The view, outside any runner (rebuild, status, reads); creates its tables if missing. Close it."""
    factory = InfrastructureFactory.construct(env=projection_env(name, env))
    return factory.tracking_recorder(view_class(name, env))
