"""One PostgreSQL connection pool per process for all the views of a schema, shared by readers and runners.

A pool per view (eventsourcing's default, P9) cost a dozen idle connections per process, and
replicas then ran PostgreSQL out of connections; views only need a connection per transaction.
"""

from __future__ import annotations

import threading

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import Environment

VIEWS_ENV_NAME = "views"   # pool size keys: VIEWS_POSTGRES_POOL_SIZE, VIEWS_POSTGRES_MAX_OVERFLOW

_lock = threading.Lock()
_shared: dict[tuple, tuple[PostgresDatastore, int]] = {}   # key -> (datastore, number of views using it)


def _key(env: Environment) -> tuple:
    return tuple(env.get(k) for k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME", "POSTGRES_USER",
                                      "POSTGRES_PASSWORD", "POSTGRES_SCHEMA"))


def acquire(env: dict) -> PostgresDatastore:
    """The process's views datastore for the env's database and schema; release() it when done."""
    environment = Environment(VIEWS_ENV_NAME, env)
    key = _key(environment)
    with _lock:
        datastore, users = _shared.get(key, (None, 0))
        if datastore is None:
            datastore = InfrastructureFactory.construct(env=environment).datastore
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
