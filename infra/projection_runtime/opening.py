"""Opening views from the eventsourcing environment: which backend, which file or shared pool, which applications."""

from __future__ import annotations

import os

from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from application.access import Access
from application.pulls import Pulls
from application.cache_records import CacheRecords
from infra.projection_runtime import datastores
from projections.tags_and_manifests import PostgresTagsAndManifests, SqliteTagsAndManifests
from projections.catalog import POSTGRES, spec, view_class
from projections.postgres_view import PostgresView
from projections.base import View

# In the order a one-pass rebuild reads their logs: Access before Pulls, because the chain view learns from
# Access's archive records where the Pulls chain goes on (projections/chain.py).
APPLICATIONS: dict[str, type[Application]] = {app.name: app for app in (CacheRecords, Access, Pulls)}


def application_classes(name: str) -> tuple[type[Application], ...]:
    """The application classes a projection follows, in order."""
    return tuple(APPLICATIONS[app_name] for app_name in spec(name).applications)


def projection_env(name: str, env: dict | None) -> Environment:
    """The environment a view is configured from (its name is the key prefix: TAGS_SQLITE_DBNAME, ...)."""
    return Environment(name, {**os.environ, **(env or {})})


def backend(env: dict | None, name: str = "") -> str:
    """The persistence module of a projection's view (or of the apps, without a name)."""
    return projection_env(name, env).get("PERSISTENCE_MODULE", "")


def is_postgres(env: dict | None) -> bool:
    return backend(env) == POSTGRES


def open_view(name: str, env: dict | None, version: int | None = None, follow_live: bool = True) -> View:
    """The view, outside any runner (rebuild, status, reads); creates its tables if missing. Close it.

    On PostgreSQL: writes go to `version` (default: the live one); reads follow the live version
    unless `follow_live` is False. SQLite has one version only.
    """
    cls = view_class(name, backend(env, name))
    settings = projection_env(name, env)
    if not issubclass(cls, PostgresView):
        view = InfrastructureFactory.construct(env=settings).tracking_recorder(cls)
        view.configure(settings)
        return view
    datastore = datastores.acquire({**os.environ, **(env or {})})
    try:
        view = cls(datastore, version=version, follow_live=follow_live, release=datastores.release)
        view.configure(settings)
        view.create_table()
    except BaseException:
        datastores.release(datastore)
        raise
    return view


def open_tags_and_manifests(env: dict) -> SqliteTagsAndManifests | PostgresTagsAndManifests:
    """The hot path's view for the configured backend; close() it."""
    # Both views' tables are created first: a reader must not fail on a view no runner has created yet.
    if is_postgres(env):
        open_view("manifests", env).close()
        tags = open_view("tags", env)
        assert isinstance(tags, PostgresView)
        return PostgresTagsAndManifests(tags)
    paths = []
    for name in ("tags", "manifests"):
        open_view(name, env).close()
        paths.append(projection_env(name, env).get("SQLITE_DBNAME"))
    return SqliteTagsAndManifests(*paths)
