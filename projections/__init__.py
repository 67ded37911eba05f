"""The read model: event -> rows with exactly-once tracking (SQLite or PostgreSQL), and the views' queries."""

from projections.cache_view import PostgresCacheView, SqliteCacheView, open_cache_view
from projections.catalog import CATALOG, PROJECTION_NAMES, UnknownProjection, is_postgres, open_view
from projections.guarded import GuardedRunners
from projections.progress import ProjectionCrashed, ProjectionStatus, status, wait_caught_up
from projections.rebuild import RebuildInProgress, rebuild
from projections.runners import ProjectionRunners, projection_runners

__all__ = [
    "CATALOG", "PROJECTION_NAMES", "GuardedRunners", "PostgresCacheView", "ProjectionCrashed", "ProjectionRunners",
    "ProjectionStatus", "RebuildInProgress", "SqliteCacheView", "UnknownProjection", "is_postgres", "open_cache_view",
    "open_view", "projection_runners", "rebuild", "status", "wait_caught_up",
]
