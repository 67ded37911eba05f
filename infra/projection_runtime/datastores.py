"""One PostgreSQL connection pool per process for all the views of a schema, shared by readers and runners.

A pool per view (eventsourcing's default, P9) cost a dozen idle connections per process, and
replicas then ran PostgreSQL out of connections; views only need a connection per transaction.

The pool checks a connection before handing it out, so one whose backend was terminated
(pg_terminate_backend, a restart) is replaced instead of failing a read, and every connection
has a statement timeout, so that a read on a blocked database fails in seconds, not minutes
(writers lift it for their own transactions: projections/postgres_view.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import Environment, strtobool
from psycopg import Connection
from psycopg.sql import SQL, Literal

from infra.bounded_postgres import bound_pool

VIEWS_ENV_NAME = "views"   # keys: VIEWS_POSTGRES_POOL_SIZE, VIEWS_POSTGRES_MAX_OVERFLOW, VIEWS_STATEMENT_TIMEOUT, ...
STATEMENT_TIMEOUT = 5.0    # seconds, for a view read; VIEWS_STATEMENT_TIMEOUT overrides it

_lock = threading.Lock()
_shared: dict[tuple, tuple[PostgresDatastore, int]] = {}   # key -> (datastore, number of views using it)


class ViewsDatastore(PostgresDatastore):
    """A PostgresDatastore whose connections start with a statement timeout."""

    def __init__(self, *args: Any, statement_timeout: float = STATEMENT_TIMEOUT, **kwargs: Any) -> None:
        self.statement_timeout = statement_timeout
        super().__init__(*args, **kwargs)

    def after_connect_func(self) -> Callable[[Connection[Any]], None]:
        configure = super().after_connect_func()
        statement = SQL("SET statement_timeout = {}").format(Literal(f"{int(self.statement_timeout * 1000)}ms"))

        def after_connect(conn: Connection[Any]) -> None:
            configure(conn)
            conn.execute(statement)

        return after_connect


def _key(env: Environment) -> tuple:
    return tuple(env.get(k) for k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME", "POSTGRES_USER",
                                      "POSTGRES_PASSWORD", "POSTGRES_SCHEMA"))


def _construct(env: Environment) -> ViewsDatastore:
    def number(key: str, default: str) -> float:
        return float(env.get(key) or default)

    datastore = ViewsDatastore(
        dbname=env.get("POSTGRES_DBNAME") or "", host=env.get("POSTGRES_HOST") or "",
        port=env.get("POSTGRES_PORT") or "5432", user=env.get("POSTGRES_USER") or "",
        password=env.get("POSTGRES_PASSWORD") or "", schema=env.get("POSTGRES_SCHEMA") or "",
        connect_timeout=number("POSTGRES_CONNECT_TIMEOUT", "5"),
        idle_in_transaction_session_timeout=number("POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT", "0"),
        pool_size=int(number("POSTGRES_POOL_SIZE", "1")), max_overflow=int(number("POSTGRES_MAX_OVERFLOW", "0")),
        conn_max_age=number("POSTGRES_CONN_MAX_AGE", "3600"),
        pre_ping=strtobool(env.get("POSTGRES_PRE_PING") or "yes"),
        statement_timeout=number("STATEMENT_TIMEOUT", str(STATEMENT_TIMEOUT)),
    )
    # The same bounds as the apps' pools: a read fails fast while the database refuses connections,
    # and the pool reconnects within a second of it coming back (infra/bounded_postgres.py).
    bound_pool(datastore.pool)
    return datastore


def acquire(env: dict) -> PostgresDatastore:
    """The process's views datastore for the env's database and schema; release() it when done."""
    environment = Environment(VIEWS_ENV_NAME, env)
    key = _key(environment)
    with _lock:
        datastore, users = _shared.get(key, (None, 0))
        if datastore is None:
            datastore = _construct(environment)
        _shared[key] = (datastore, users + 1)
        return datastore


def release(datastore: PostgresDatastore) -> None:
    """The last view to let go closes the pool."""
    with _lock:
        for key, (shared, users) in list(_shared.items()):
            if shared is datastore:
                if users > 1:
                    _shared[key] = (shared, users - 1)
                    return
                del _shared[key]
                break
        else:
            return
    datastore.close()
