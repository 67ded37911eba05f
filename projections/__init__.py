"""The read model: event -> rows with exactly-once tracking (SQLite or PostgreSQL), and the views' queries.

The machinery that runs the views (workers, locks, rebuilds, status) is in infra/projection_runtime.
"""

from projections.tags_and_manifests import PostgresTagsAndManifests, SqliteTagsAndManifests
from projections.catalog import CATALOG, PROJECTION_NAMES, UnknownProjection, spec, view_class

__all__ = ["CATALOG", "PROJECTION_NAMES", "PostgresTagsAndManifests", "SqliteTagsAndManifests", "UnknownProjection", "spec",
           "view_class"]
