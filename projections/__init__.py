"""The read model: event -> rows with exactly-once tracking, one view per file, and the views' queries."""

from projections.cache_view import SqliteCacheView
from projections.catalog import CATALOG, PROJECTION_NAMES, UnknownProjection, open_view
from projections.progress import ProjectionStatus, status, wait_caught_up
from projections.rebuild import rebuild
from projections.runners import ProjectionCrashed, ProjectionRunners

__all__ = [
    "CATALOG", "PROJECTION_NAMES", "ProjectionCrashed", "ProjectionRunners", "ProjectionStatus", "SqliteCacheView",
    "UnknownProjection", "open_view", "rebuild", "status", "wait_caught_up",
]
