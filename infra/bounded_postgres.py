"""Bounds on the event store's PostgreSQL calls: no caller waits long on a dead database, no writer keeps the lock.

eventsourcing's defaults wait 30 s for a pooled connection, retry every call 10 times (so a call
could wait five minutes while the database refuses connections), reconnect with a backoff that
grows to minutes (service came back 24 s after the database), and send a big insert through
psycopg's pipeline mode, which stalls for good on a payload larger than the socket buffers
(psycopg 3.3's pipeline stops flushing once its command queue is empty, while the server
waits for the rest of the message in `ClientRead`, holding the EXCLUSIVE lock of the events
table: one 9 MB admin request wedged every writer for 11 minutes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (ConnectionPool, PostgresAggregateRecorder, PostgresApplicationRecorder,
                                   PostgresFactory)
from psycopg.sql import SQL, Identifier
from psycopg_pool import PoolTimeout

from application.errors import EventStoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT = 3          # s: waiting for a pooled connection, and libpq's connect (eventsourcing: 30, libpq: none)
LOCK_TIMEOUT = 3             # s: a writer waiting for the events table lock gives up (eventsourcing: forever)
STATEMENT_TIMEOUT = 5        # s: each statement of a write transaction
IDLE_IN_TRANSACTION = 5      # s: a session idle inside a transaction is ended by the server
RECONNECT_TIMEOUT = 2.0      # s: psycopg_pool gives a dead database up after this, and the next caller retries at once
DOWN_WAIT = 0.25             # s: how long a caller waits for a connection while the database is known unreachable
# Bytes of event state above which an insert does not use pipeline mode. The stall needs bytes left
# in libpq's buffer once the server has nothing more to answer: 4 MB went through on loopback, but a
# connection over a network starts with far smaller socket buffers. Below 8 KiB the whole pipeline
# leaves in one send into the kernel's smallest default send buffer (16 KiB); a pull batch of more
# than ~20 pulls (375 bytes each) goes without the pipeline: 3 round trips more per batch, not per
# pull (no difference measurable on the loaded 2-core VM: 12-54 ms per batch either way).
PIPELINE_LIMIT = 8 * 1024
# TCP keepalives and a send timeout: a database host that vanished is noticed in ~20 s, not hours.
TCP_BOUNDS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
              "tcp_user_timeout": 20_000}


class FailFastPool(ConnectionPool):
    """A pool that, while its last connection attempt failed, makes callers wait DOWN_WAIT, not the full timeout.

    Reconnection is driven by demand: with a short `reconnect_timeout` the pool gives up its
    backoff quickly, and the next caller starts a fresh attempt, so service is back within about
    a second of the database (psycopg_pool's backoff doubles up to minutes otherwise).
    """

    _unreachable_since: float | None = None

    def _connect(self, timeout: float | None = None):
        try:
            conn = super()._connect(timeout)
        except Exception:
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            raise
        self._unreachable_since = None
        return conn

    def getconn(self, timeout: float | None = None):
        # Waited for in slices: a caller already waiting learns of a refused connection attempt too.
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                return super().getconn(min(remaining, DOWN_WAIT))
            except PoolTimeout:
                if self._unreachable_since is not None or remaining <= DOWN_WAIT:
                    raise


def bound_pool(pool: ConnectionPool) -> None:
    """Apply the bounds to a pool eventsourcing built (before it is opened)."""
    pool.__class__ = FailFastPool if type(pool) is ConnectionPool else pool.__class__
    pool.reconnect_timeout = RECONNECT_TIMEOUT
    # libpq connects with no timeout unless told; the pool only bounds how long a caller waits.
    pool.kwargs = {**(pool.kwargs or {}), "connect_timeout": CONNECT_TIMEOUT, **TCP_BOUNDS}


class BoundedPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory with the bounds applied to its pool (PERSISTENCE_MODULE of apps and views)."""

    def __init__(self, env) -> None:
        super().__init__(env)
        bound_pool(self.datastore.pool)


BOUNDED_FACTORY_TOPIC = f"{__name__}:{BoundedPostgresFactory.__qualname__}"


def _is_timeout(error: BaseException) -> bool:
    cause = error.__cause__
    return isinstance(cause, (PoolTimeout, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))


def bounded_call(pool: ConnectionPool, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One call; once more right away if a pooled connection had died (e.g. a terminated backend).

    Before the retry the pool's idle connections are checked, so the retry does not pick another
    dead one (after a database restart they all are). Never retried after a timeout (that would
    double the wait). A database failure becomes EventStoreUnavailable: 503 UNAVAILABLE to clients.
    """
    for attempt in (1, 2):
        try:
            return call(*args, **kwargs)
        except (OperationalError, InterfaceError) as error:
            if attempt == 1 and not _is_timeout(error):
                log.info("event store call failed (%s); retrying once on a fresh connection", error)
                try:
                    pool.check()   # discards the broken idle connections (and starts replacing them)
                except Exception as check_error:   # the retry will tell
                    log.debug("pool check failed: %s", check_error)
                continue
            log.warning("event store unavailable: %s", str(error).strip().splitlines()[0] if str(error) else error)
            raise EventStoreUnavailable("the event store (PostgreSQL) is unavailable; try again shortly") from error
    raise AssertionError("unreachable")


def _undecorated(method: Callable) -> Callable:
    """eventsourcing's method without its 10-attempt retry decorator."""
    return getattr(method, "__wrapped__", method)


_insert = _undecorated(PostgresApplicationRecorder.insert_events)
_select_events = _undecorated(PostgresApplicationRecorder.select_events)
_select_notifications = _undecorated(PostgresApplicationRecorder.select_notifications)
_max_notification_id = _undecorated(PostgresApplicationRecorder.max_notification_id)


class BoundedPostgresApplicationRecorder(PostgresApplicationRecorder):
    """Bounded calls; a write transaction's statements time out; a big insert goes without pipeline mode."""

    def __init__(self, datastore, **kwargs) -> None:
        super().__init__(datastore, **kwargs)
        # Sent in the same pipeline as the LOCK TABLE, so they cost no round trip. statement_timeout
        # also ends a lock holder whose insert runs too long; the server cannot time out a backend
        # waiting for the rest of a client's message, hence no pipeline for big payloads below.
        # The idle bound is the session's (POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT, IDLE_IN_TRANSACTION
        # as postgres_env sets it): a bulk writer that sets it longer (bench.scale's history builder,
        # descheduled for seconds between its lock and its insert at load 11) is not cut to 5 s here.
        idle = getattr(datastore, "idle_in_transaction_session_timeout", 0) or IDLE_IN_TRANSACTION
        self.lock_table_statements[:0] = [
            SQL("SET LOCAL statement_timeout = '{0}s'").format(STATEMENT_TIMEOUT),
            SQL("SET LOCAL idle_in_transaction_session_timeout = '{0}ms'").format(int(idle * 1000)),
        ]

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if sum(len(event.state) for event in stored_events) > PIPELINE_LIMIT:
            return self._bounded(self._insert_without_pipeline, stored_events, **kwargs)
        return self._bounded(_insert, self, stored_events, **kwargs)

    def _bounded(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return bounded_call(self.datastore.pool, call, *args, **kwargs)

    def _insert_without_pipeline(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        """The statements of eventsourcing's pipelined insert in four round trips: BEGIN, the
        timeouts + table lock + NOTIFY as one simple query, the INSERT (psycopg flushes it whole
        before it waits), COMMIT."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            curs.execute(SQL("; ").join([*self.lock_table_statements,
                                         SQL("NOTIFY {0}").format(Identifier(self.channel_name))]))
            PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def select_events(self, originator_id, **kwargs: Any) -> Sequence[StoredEvent]:
        return self._bounded(_select_events, self, originator_id, **kwargs)

    def select_notifications(self, start, limit, stop=None, topics=(), *, inclusive_of_start=True):
        return self._bounded(_select_notifications, self, start, limit, stop, topics,
                             inclusive_of_start=inclusive_of_start)

    def max_notification_id(self) -> int | None:
        return self._bounded(_max_notification_id, self)


def check_connection(env: dict[str, str]) -> None:
    """Open a new connection and run a query: what /readyz asks (a pooled connection may outlive the database)."""
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         password=env["POSTGRES_PASSWORD"] or None, dbname=env["POSTGRES_DBNAME"],
                         autocommit=True, connect_timeout=CONNECT_TIMEOUT, **TCP_BOUNDS) as conn:
        conn.execute("SELECT 1")
