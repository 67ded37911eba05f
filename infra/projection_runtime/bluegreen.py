"""Blue/green rebuild of a PostgreSQL view while serving: a fresh copy is built, caught up, then switched to."""

from __future__ import annotations

import logging
from contextlib import ExitStack, closing

from infra.projection_runtime import locks
from infra.projection_runtime.opening import application_classes, open_view
from infra.projection_runtime.replay import replay
from projections import versions
from projections.catalog import spec
from projections.postgres_view import PostgresView

log = logging.getLogger(__name__)

CATCH_UP_PASSES = 20


class RebuildInProgress(RuntimeError):
    """Another process is rebuilding the same projection."""


def rebuild_blue_green(name: str, env: dict, page_size: int) -> dict[str, int]:
    """Replay every app the projection follows into version live+1, then make it live in one transaction.

    Readers and the runner keep using the live copy meanwhile. The runner holding the projection's
    lock follows the switch (it is NOTIFYed) and drops the old copy; without a runner, we drop it.
    """
    projection_spec, schema = spec(name), locks.schema_of(env)
    tables = projection_spec.postgres_view.tables
    with ExitStack() as stack:
        session = stack.enter_context(closing(locks.connect(env)))
        if not locks.try_lock(session, locks.advisory_key(schema, name, "rebuild")):
            raise RebuildInProgress(f"projection {name!r} is being rebuilt by another process")
        live_view = open_view(name, env)                  # creates version 1 when the projection is new
        live = live_view.version
        live_view.close()
        new = live + 1
        with session.transaction():  # a failed earlier rebuild may have left this version half built
            versions.ddl_lock(session.cursor(), schema)
            versions.drop_version(session.cursor(), schema, name, tables, new)
        view = open_view(name, env, version=new, follow_live=False)
        stack.callback(view.close)
        assert isinstance(view, PostgresView)
        apps = []
        for app_class in application_classes(name):
            apps.append(app_class(env=env))
            stack.callback(apps[-1].close)
        topics = projection_spec.handled_topics()
        replayed = {app.name: 0 for app in apps}
        for _ in range(CATCH_UP_PASSES):  # events keep arriving while we replay: chase the head
            counts = {app.name: replay(view, app, topics, page_size, view.max_tracking_id(app.name) or 0)
                      for app in apps}
            replayed = {app: replayed[app] + n for app, n in counts.items()}
            if sum(counts.values()) < page_size:
                break
        with view.datastore.transaction(commit=True) as c:
            versions.switch(c, schema, name, tables, new)
        log.info("projection %s: version %d is live (replayed %s)", name, new, replayed)
        _drop_unless_running(session, schema, name, tables, new)
        return replayed


def _drop_unless_running(session, schema: str, name: str, tables: tuple[str, ...], live: int) -> None:
    """The copies below `live` belong to the projection's runner; with none running, drop them here."""
    key = locks.runner_key(schema, name)
    if not locks.try_lock(session, key):
        return  # the runner drops them once it has moved to the new version
    try:
        with session.transaction():
            versions.ddl_lock(session.cursor(), schema)
            for version in sorted(versions.existing_versions(session.cursor(), schema, name)):
                if version < live:
                    versions.drop_version(session.cursor(), schema, name, tables, version)
    finally:
        locks.unlock(session, key)
