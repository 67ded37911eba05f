"""Blue/green rebuild of PostgreSQL views while serving: a fresh copy is built, caught up, then switched to."""

from __future__ import annotations

import logging
from contextlib import ExitStack, closing

from infra.projection_runtime import locks
from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.bulk import restore_indexes
from infra.projection_runtime.opening import APPLICATIONS, open_view
from infra.projection_runtime.replay import replay_shared
from projections import versions
from projections.catalog import spec
from projections.postgres_view import PostgresView

log = logging.getLogger(__name__)

CATCH_UP_PASSES = 20


class RebuildInProgress(RuntimeError):
    """Another process is rebuilding the same projection."""


def rebuild_blue_green(name: str, env: dict, page_size: int,
                       archive: ArchivedRecords | None = None) -> dict[str, int]:
    """Replay every app the projection follows into version live+1, then make it live in one transaction.

    Readers and the runner keep using the live copy meanwhile. The runner holding the projection's
    lock follows the switch (it is NOTIFYed) and drops the old copy; without a runner, we drop it.
    """
    return rebuild_blue_green_many((name,), env, page_size, archive=archive)[name]


def rebuild_blue_green_many(names: tuple[str, ...], env: dict, page_size: int,
                            seconds: dict[str, float] | None = None,
                            archive: ArchivedRecords | None = None,
                            bulk_events: int = 0) -> dict[str, dict[str, int]]:
    """As rebuild_blue_green, for several views in one pass over each application's log (read and
    decoded once for all of them); each view still switches in its own transaction. `archive`: the
    archived pulls are replayed first (the catch-up passes start past them and read none again).
    `bulk_events` > 0: the fresh copies are bulk loaded (rebuild.REBUILD_BULK_EVENTS): their secondary
    indexes are made after the replay, before the switch."""
    schema = locks.schema_of(env)
    with ExitStack() as stack:
        session = stack.enter_context(closing(locks.connect(env)))
        # Released before the session closes, not when PostgreSQL notices it closed: a rebuild right after this
        # one (another process's, or this process's after a child's) must not find the locks still held.
        stack.callback(_unlock_all, session)
        views: dict[str, PostgresView] = {}
        for name in names:
            if not locks.try_lock(session, locks.advisory_key(schema, name, "rebuild")):
                raise RebuildInProgress(f"projection {name!r} is being rebuilt by another process")
            views[name] = _fresh_copy(session, schema, name, env)
            stack.callback(views[name].close)
            if bulk_events:
                views[name].drop_indexes()   # a copy nobody reads yet; made again before the switch
        app_names = [app for app in APPLICATIONS if any(app in spec(name).applications for name in names)]
        apps = {}
        for app_name in app_names:
            apps[app_name] = APPLICATIONS[app_name](env=env)
            stack.callback(apps[app_name].close)
        replayed = {name: {app: 0 for app in spec(name).applications} for name in names}
        spent = [0.0] * len(names)
        for _ in range(CATCH_UP_PASSES):  # events keep arriving while we replay: chase the head
            more = 0
            for app_name, app in apps.items():
                followers = [name for name in names if app_name in spec(name).applications]
                spent_of = [0.0] * len(followers)
                counts = replay_shared([views[name] for name in followers], app, page_size,
                                       [views[name].max_tracking_id(app_name) or 0 for name in followers],
                                       seconds=spent_of, archive=archive, gather_events=bulk_events)
                for name, count, took in zip(followers, counts, spent_of):
                    replayed[name][app_name] += count
                    spent[names.index(name)] += took
                more = max(more, *counts)
            if more < page_size:
                break
        if bulk_events:
            for name, took in restore_indexes(list(views.values())).items():
                spent[names.index(name)] += took
        for name, view in views.items():
            with view.datastore.transaction(commit=True) as c:
                versions.switch(c, schema, name, spec(name).postgres_view.tables, view.version)
            log.info("projection %s: version %d is live (replayed %s)", name, view.version, replayed[name])
            _drop_unless_running(session, schema, name, spec(name).postgres_view.tables, view.version)
        if seconds is not None:
            seconds.update({name: seconds.get(name, 0.0) + took for name, took in zip(names, spent)})
        return replayed


def _unlock_all(session) -> None:
    try:
        locks.unlock_all(session)
    except Exception:   # a dead session: its locks went with it
        pass


def _fresh_copy(session, schema: str, name: str, env: dict) -> PostgresView:
    """An empty version live+1 of the view, to replay into while readers use the live one."""
    live_view = open_view(name, env)                  # creates version 1 when the projection is new
    live = live_view.version
    live_view.close()
    new = live + 1
    with session.transaction():  # a failed earlier rebuild may have left this version half built
        versions.ddl_lock(session.cursor(), schema)
        versions.drop_version(session.cursor(), schema, name, spec(name).postgres_view.tables, new)
    view = open_view(name, env, version=new, follow_live=False)
    assert isinstance(view, PostgresView)
    return view


def _drop_unless_running(session, schema: str, name: str, tables: tuple[str, ...], live: int) -> None:
    """The copies below `live` belong to the projection's runner; with none running, drop them here."""
    key = locks.runner_key(schema, name)
    if not locks.try_lock(session, key):
        return  # the runner drops them once it has moved to the new version
    try:
        with session.transaction():
            versions.ddl_lock(session.cursor(), schema)
            versions.drop_retired(session.cursor(), schema, spec(name).postgres_view.retired_tables)
            for version in sorted(versions.existing_versions(session.cursor(), schema, name)):
                if version < live:
                    versions.drop_version(session.cursor(), schema, name, tables, version)
    finally:
        locks.unlock(session, key)
