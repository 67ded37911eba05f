"""Rebuilding one view from the event store: offline in place on SQLite, blue/green on PostgreSQL."""

from __future__ import annotations

import logging

from infra.projection_runtime.bluegreen import RebuildInProgress, rebuild_blue_green
from infra.projection_runtime.opening import application_classes, is_postgres, open_view
from infra.projection_runtime.replay import replay
from infra.projection_runtime.workers import PAGE_SIZE
from projections.catalog import spec

log = logging.getLogger(__name__)

__all__ = ["PAGE_SIZE", "RebuildInProgress", "rebuild"]


def rebuild(name: str, env: dict, page_size: int = PAGE_SIZE) -> dict[str, int]:
    """Replay every application the view follows; returns events replayed per application.

    PostgreSQL: while serving, into a new copy that replaces the live one atomically (bluegreen.py).
    SQLite: in place, so nothing else may write the view meanwhile: stop its runners (or the server)
    first. Events recorded during the rebuild are left for the runner, which resumes after the
    position the rebuild ends at.
    """
    if is_postgres(env):
        return rebuild_blue_green(name, env, page_size)
    projection_spec = spec(name)
    view = open_view(name, env)
    replayed: dict[str, int] = {}
    try:
        view.clear()  # rows and tracking in one transaction: a failed rebuild restarts from scratch
        for app_class in application_classes(name):
            app = app_class(env=env)
            try:
                replayed[app.name] = replay(view, app, projection_spec.handled_topics(), page_size)
            finally:
                app.close()
    finally:
        view.close()
    log.info("rebuilt projection %s: %s", name, replayed)
    return replayed
