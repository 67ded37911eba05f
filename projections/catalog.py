"""The views by name: which applications each follows and which class each backend uses."""

from __future__ import annotations

from dataclasses import dataclass

from projections.analytics_backends import PostgresAnalyticsView, SqliteAnalyticsView
from projections.audit import PostgresAuditView, SqliteAuditView
from projections.base import SqliteView, View
from projections.chain import PostgresChainView, SqliteChainView
from projections.blobs import PostgresBlobsView, SqliteBlobsView
from projections.counters import PostgresCountersView, SqliteCountersView
from projections.history import PostgresHistoryView, SqliteHistoryView
from projections.manifests import PostgresManifestsView, SqliteManifestsView
from projections.orgs import PostgresOrgsView, SqliteOrgsView
from projections.postgres_view import PostgresView
from projections.referrers import PostgresReferrersView, SqliteReferrersView
from projections.retention_sql import PostgresRetentionView, SqliteRetentionView
from projections.tags import PostgresTagsView, SqliteTagsView

SQLITE, POSTGRES = "eventsourcing.sqlite", "eventsourcing.postgres"


@dataclass(frozen=True)
class ProjectionSpec:
    sqlite_view: type[SqliteView]
    postgres_view: type[PostgresView]

    @property
    def name(self) -> str:
        return self.sqlite_view.name

    @property
    def applications(self) -> tuple[str, ...]:
        """The names of the applications whose events feed the view, in the order they are followed."""
        return self.sqlite_view.follows

    def handled_topics(self) -> list[str]:
        return self.sqlite_view.handled_topics()


CATALOG: dict[str, ProjectionSpec] = {spec.name: spec for spec in (
    ProjectionSpec(SqliteTagsView, PostgresTagsView),
    ProjectionSpec(SqliteManifestsView, PostgresManifestsView),
    ProjectionSpec(SqliteBlobsView, PostgresBlobsView),
    ProjectionSpec(SqliteAuditView, PostgresAuditView),
    ProjectionSpec(SqliteCountersView, PostgresCountersView),
    ProjectionSpec(SqliteOrgsView, PostgresOrgsView),
    ProjectionSpec(SqliteReferrersView, PostgresReferrersView),
    ProjectionSpec(SqliteAnalyticsView, PostgresAnalyticsView),
    ProjectionSpec(SqliteRetentionView, PostgresRetentionView),
    ProjectionSpec(SqliteHistoryView, PostgresHistoryView),
    ProjectionSpec(SqliteChainView, PostgresChainView),
)}
PROJECTION_NAMES = tuple(CATALOG)


class UnknownProjection(KeyError):
    """A projection name that is not in the catalog."""


def spec(name: str) -> ProjectionSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownProjection(f"unknown projection {name!r}; known: {', '.join(PROJECTION_NAMES)}") from None


def view_class(name: str, persistence_module: str) -> type[View]:
    """The view class of a projection for an eventsourcing persistence module."""
    if persistence_module == SQLITE:
        return spec(name).sqlite_view
    if persistence_module == POSTGRES:
        return spec(name).postgres_view
    raise NotImplementedError(f"projection {name!r}: no view for PERSISTENCE_MODULE={persistence_module!r}")
