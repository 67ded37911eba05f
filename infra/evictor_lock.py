"""The evictor's cluster-wide lock: a PostgreSQL session advisory lock, or in-process with SQLite (one process)."""

from __future__ import annotations

import logging
import threading

import psycopg

from infra.projection_runtime import locks

log = logging.getLogger(__name__)


class PostgresEvictorLock:
    """Session-level: a process that dies (or loses its session) lets go at once, so another takes over."""

    def __init__(self, env: dict) -> None:
        self._env = env
        self._key = locks.advisory_key(locks.schema_of(env), "evictor", "lock")
        self._conn: psycopg.Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = locks.connect(self._env)
            self._held = locks.try_lock(self._conn, self._key)
        except psycopg.Error as error:
            log.warning("evictor lock unavailable: %s", error)
            self._drop()
            return False
        return self._held

    def release(self) -> None:
        if self._held and self._conn is not None:
            try:
                locks.unlock(self._conn, self._key)
            except psycopg.Error:
                self._drop()   # the session is gone, and the lock with it
        self._held = False

    def close(self) -> None:
        self.release()
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn, self._held = None, False


class InProcessEvictorLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def release(self) -> None:
        if self._lock.locked():
            self._lock.release()

    def close(self) -> None:
        pass
