"""The projection runtime: workers that feed the views, the locks that keep one per projection, rebuilds, status."""

from infra.projection_runtime.bluegreen import RebuildInProgress
from infra.projection_runtime.locked import LockedRunners
from infra.projection_runtime.opening import is_postgres, open_tags_and_manifests, open_view
from infra.projection_runtime.progress import ProjectionCrashed, ProjectionStatus, status, wait_caught_up
from infra.projection_runtime.rebuild import rebuild, rebuild_many
from infra.projection_runtime.runners import ProjectionRunners, projection_runners

__all__ = [
    "LockedRunners", "ProjectionCrashed", "ProjectionRunners", "ProjectionStatus", "RebuildInProgress", "is_postgres",
    "open_tags_and_manifests", "open_view", "projection_runners", "rebuild", "rebuild_many", "status", "wait_caught_up",
]
