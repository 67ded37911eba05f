"""Persistence wiring: the eventsourcing environment of every app and view, embedded SQLite or PostgreSQL."""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription, StoredEvent, Subscription
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from infra import bounded_postgres as bounds
from infra.commit_signals import COMMITS, log_of
from infra.secrets import cipher_env, credentials_env, private_dir, private_file, secret_key
from infra.settings import Settings, SettingsError
from projections.catalog import PROJECTION_NAMES
from projections.versions import advisory_key

# The Pulls application's mapper (infra/event_encoding.py): pull events encoded by msgspec, the library's bytes.
PULL_MAPPER_TOPIC = "infra.event_encoding:PullMapper"

log = logging.getLogger(__name__)

# The apps projections follow (Access: only the audit chain); Credentials is never projected.
APPLICATION_NAMES = ("Registry", "Pulls", "Access")
URL_PARTS = {"host", "port", "dbname", "user", "password"}


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached, or the database or schema cannot be created there."""


def event_store_env(settings: Settings) -> dict[str, str]:
    """The environment of CacheRecords, Pulls, Credentials and every view, for the configured backend.

    On PostgreSQL it also creates the database (when the user may) and the schema if missing.
    """
    data_dir = os.path.abspath(settings.data_dir)
    key = secret_key(data_dir, settings.secret_key)
    env = _event_store_env(settings, data_dir, key)
    # The views read their own settings from here too (View.configure): runners in other processes get them.
    env["ANALYTICS_MINUTE_DAYS"] = str(settings.analytics.minute_days)
    return env


def _event_store_env(settings: Settings, data_dir: str, key: str) -> dict[str, str]:
    if not settings.database.url:
        env = embedded_env(data_dir)
        env.update(credentials_env(data_dir, key))
        env["CREDENTIALS_PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
        env["ACCESS_PERSISTENCE_MODULE"] = "eventsourcing.sqlite"   # access.db (embedded_env): token hashes only
        return env
    if not settings.secret_key:
        log.info("no [server] secret_key: upstream credentials use the key in %s; every replica sharing "
                    "this database needs the same key (set secret_key or $ENTREPOT_SECRET_KEY)", data_dir)
    env = postgres_env(settings.database.url, settings.database.schema)
    prepare_database(env)
    env.update(cipher_env(key))
    return env


# -- PostgreSQL ------------------------------------------------------------------------------------

def postgres_env(url: str, schema: str) -> dict[str, str]:
    """POSTGRES_* keys from a postgresql:// URL; nothing is connected to here."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"[database] url must start with postgresql://, got {url.split(':', 1)[0]!r}")
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise SettingsError(f"[database] url is not a valid PostgreSQL URL: {error}") from None
    unsupported = set(parts) - URL_PARTS
    if unsupported:
        # eventsourcing connects with these five parts only; libpq still reads PGSSLMODE and friends.
        raise SettingsError(f"[database] url: unsupported parameter(s) {', '.join(sorted(unsupported))}; "
                            "use the libpq environment variables (PGSSLMODE, ...) instead")
    if not str(parts.get("port") or "5432").isdigit():
        raise SettingsError(f"[database] url: port must be a number, got {parts['port']!r}")
    if not schema:
        raise SettingsError("[database] schema must not be empty")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.get("dbname") or "entrepot",
        "POSTGRES_HOST": parts.get("host") or "localhost",
        "POSTGRES_PORT": parts.get("port") or "5432",
        "POSTGRES_USER": parts.get("user") or getpass.getuser(),
        "POSTGRES_PASSWORD": parts.get("password") or os.environ.get("PGPASSWORD", ""),
        "POSTGRES_SCHEMA": schema,
        # Never the plpgsql insert functions: they skip the table lock and subscribers then miss events (P5).
        "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
        "PULLS_MAPPER_TOPIC": PULL_MAPPER_TOPIC,   # pull events encoded by msgspec, the library's bytes
        "APPLICATION_RECORDER_TOPIC": LOCKED_RECORDER_TOPIC,
        # Every app has its own pool (P9): one idle connection each, more only under load, so that
        # replicas fit max_connections. The views of a process share one pool (infra/projection_runtime/datastores.py).
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "9",
        "VIEWS_POSTGRES_POOL_SIZE": "1",
        "VIEWS_POSTGRES_MAX_OVERFLOW": "11",
        # Bounded waits (infra/bounded_postgres.py): a dead database answers 503 in seconds, never hangs.
        "POSTGRES_CONNECT_TIMEOUT": str(bounds.CONNECT_TIMEOUT),
        "POSTGRES_LOCK_TIMEOUT": str(bounds.LOCK_TIMEOUT),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(bounds.IDLE_IN_TRANSACTION),
    }
    # The apps' and the views' pools fail fast while the database is unreachable and reconnect
    # within a second of it coming back. Prefixed keys only: the unprefixed PERSISTENCE_MODULE
    # still names the backend (projections.catalog.backend).
    for name in (*APPLICATION_NAMES, "Credentials", "views"):
        env[f"{name.upper()}_PERSISTENCE_MODULE"] = bounds.BOUNDED_FACTORY_TOPIC
    return env


class SchemaLockedPostgresApplicationRecorder(bounds.BoundedPostgresApplicationRecorder):
    """Creates its table, type and insert function under the schema's DDL lock; wakes this process's
    projection workers after each commit (infra/commit_signals.py).

    Every Application instance runs CREATE OR REPLACE FUNCTION at construction (even with the
    functions off); two at once, e.g. two replicas starting or a runner restarting during a
    rebuild, fail with "tuple concurrently updated".
    """

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super().insert_events(stored_events, **kwargs)
        COMMITS.committed(log_of(self))
        return ids

    def create_table(self) -> None:
        key = advisory_key(self.datastore.schema, "ddl")
        with self.datastore.get_connection() as conn:   # a session lock: the DDL runs on other connections
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


LOCKED_RECORDER_TOPIC = f"{__name__}:{SchemaLockedPostgresApplicationRecorder.__qualname__}"


def connect(env: dict[str, str], dbname: str | None = None) -> psycopg.Connection:
    """An autocommit connection with the env's credentials (to another database when `dbname` is given)."""
    return psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                           password=env["POSTGRES_PASSWORD"] or None, dbname=dbname or env["POSTGRES_DBNAME"],
                           autocommit=True, connect_timeout=10)


def prepare_database(env: dict[str, str]) -> None:
    """Create the database and the schema if missing: eventsourcing creates tables only (P9)."""
    dbname, schema = env["POSTGRES_DBNAME"], env["POSTGRES_SCHEMA"]
    try:
        conn = connect(env)
    except psycopg.OperationalError as error:
        if f'database "{dbname}" does not exist' not in str(error):
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {error}") from None
        _create_database(env)
        conn = connect(env)
    with conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        except psycopg.errors.UniqueViolation:
            pass  # another process created it at the same moment
        except psycopg.errors.InsufficientPrivilege:
            raise DatabaseUnavailable(f"schema {schema!r} is missing and user {env['POSTGRES_USER']!r} may not "
                                      f"create it in database {dbname!r}") from None


def _create_database(env: dict[str, str]) -> None:
    dbname = env["POSTGRES_DBNAME"]
    try:
        with connect(env, dbname="postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        return  # created meanwhile by another replica
    except psycopg.Error as error:
        raise DatabaseUnavailable(f"database {dbname!r} does not exist and could not be created "
                                  f"(create it, or grant CREATEDB): {error}") from None
    log.info("created PostgreSQL database %s", dbname)


def check_event_store(env: dict[str, str], records) -> None:
    """Raise unless the event store answers now. On PostgreSQL a new connection is opened: a pooled one
    can outlive the database's willingness to accept connections (a blocked or full database)."""
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        bounds.check_connection(env)
    else:
        records.recorder.max_notification_id()


# -- embedded SQLite -------------------------------------------------------------------------------

class _PollingSubscription(ListenNotifySubscription):
    """SQLite has no LISTEN/NOTIFY: wake the pull loop every `interval` seconds instead (STACK-NOTES §2.5)."""

    def __init__(self, recorder, gt: int | None = None, topics: Sequence[str] = (), interval: float = 0.05) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        # Daemon: it only sets an Event, and it ends within one interval of stop().
        threading.Thread(target=self._tick, args=(interval,), daemon=True, name="sqlite-poll").start()

    def _tick(self, interval: float) -> None:
        while not self._has_been_stopped:
            time.sleep(interval)
            self._has_been_notified.set()


class PollingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """The stock SQLite recorder raises NotImplementedError in subscribe(), so ProjectionRunner cannot follow it.

    SQLite has no NOTIFY either: after each commit it wakes this process's projection workers of the
    same file (infra/commit_signals.py), which otherwise sleep.
    """

    poll_interval = 0.05  # lag of the embedded views is about this much

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super().insert_events(stored_events, **kwargs)
        COMMITS.committed(log_of(self))
        return ids

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return _PollingSubscription(self, gt=gt, topics=topics, interval=self.poll_interval)


POLLING_RECORDER_TOPIC = f"{__name__}:{PollingSQLiteApplicationRecorder.__qualname__}"


def embedded_env(data_dir: str | Path) -> dict[str, str]:
    """The eventsourcing environment of the embedded mode; creates `data_dir/views/` if missing.

    No unprefixed SQLITE_DBNAME on purpose: an app or view without its own key fails loudly
    instead of sharing a file (SQLite table names are fixed, STACK-NOTES P3).
    """
    root = Path(data_dir).absolute()
    private_dir(root / "views")
    private_dir(root)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "PULLS_MAPPER_TOPIC": PULL_MAPPER_TOPIC}
    for app in APPLICATION_NAMES:
        env[f"{app.upper()}_SQLITE_DBNAME"] = str(private_file(root / f"{app.lower()}.db"))
        env[f"{app.upper()}_APPLICATION_RECORDER_TOPIC"] = POLLING_RECORDER_TOPIC
    for name in PROJECTION_NAMES:
        env[f"{name.upper()}_SQLITE_DBNAME"] = str(private_file(root / "views" / f"{name}.db"))
    return env
