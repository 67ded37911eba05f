"""Projection workers on PostgreSQL: one runner per projection across every process, following blue/green switches.

Each process that wants to run projections keeps one session holding a session-level advisory
lock per projection it runs (`pg_try_advisory_lock`). A process that does not get a lock does
not run that projection and tries again every `interval`; when the holder exits or loses its
session, PostgreSQL releases the lock and another process takes over from the view's tracking
position. The same session LISTENs for version switches, so a rebuild's new copy is followed at once,
and for the applications' own NOTIFY on every write, which wakes the workers of the views they feed
(so a view trails a write by milliseconds, not by a worker's idle poll).
A live copy made with an older schema is rebuilt (blue/green) by the process that takes its lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import psycopg
from psycopg.sql import SQL, Identifier

from infra.projection_runtime import locks
from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.bluegreen import rebuild_blue_green
from infra.projection_runtime.opening import APPLICATIONS
from infra.projection_runtime.progress import ProjectionCrashed, ProjectionStatus, wait_for
from infra.projection_runtime.failures import log_failure
from infra.projection_runtime.runner_group import RunnerGroup
from infra.projection_runtime.workers import PAGE_SIZE
from projections import versions
from projections.catalog import PROJECTION_NAMES, spec

log = logging.getLogger(__name__)


class LockedRunners:
    """Runs whichever of `names` no other process runs; same interface as ProjectionRunners.

    A crashed projection is reported for `restart_delay` seconds, then its runners stop and its
    lock is released, so this or another process restarts it from its tracking position.
    """

    def __init__(self, env: dict[str, str], names: Iterable[str] = PROJECTION_NAMES, interval: float = 1.0,
                 restart_delay: float = 5.0, archive: ArchivedRecords | None = None) -> None:
        self._env = dict(env)
        self._archive = archive   # replayed first by a schema upgrade's rebuild and by a new copy's workers
        self._runner_env = _runner_env(self._env)
        self._names = tuple(names)
        for name in self._names:
            spec(name)  # fail on an unknown name before any thread starts
        self._schema = locks.schema_of(self._env)
        self._interval, self._restart_delay = interval, restart_delay
        self._groups: dict[str, RunnerGroup] = {}
        self._errors: dict[tuple[str, str], BaseException] = {}
        self._lock = threading.Lock()           # guards _groups against status() from other threads
        self._conn: psycopg.Connection | None = None
        self._listening: set[str] = set()       # the applications' NOTIFY channels the session listens to
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LockedRunners:
        """Takes what it can at once (so a single process runs everything on return), then keeps trying."""
        if not self._names:
            return self
        self._stopping.clear()
        self._tick()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="projection-guard")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._release_all()

    def __enter__(self) -> LockedRunners:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the supervising loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        due = time.monotonic() + self._interval
        while not self._stopping.is_set():
            try:
                switched = self._wait_for_switch(min(0.2, self._interval))
                if switched or time.monotonic() >= due:
                    self._tick()
                    due = time.monotonic() + self._interval
            except Exception as error:  # PostgreSQL went away: our locks went with the session
                log.warning("projection guard lost its PostgreSQL session (%s); its projections stop "
                            "until it reconnects", error)
                self._release_all()
                self._stopping.wait(self._interval)

    def _wait_for_switch(self, timeout: float) -> bool:
        """Wait for a notification: True for a version switch; an application's write wakes its workers."""
        if self._conn is None:
            self._stopping.wait(timeout)
            return False
        switched = False
        for note in self._conn.notifies(timeout=timeout, stop_after=1):
            if note.channel == versions.SWITCH_CHANNEL:
                switched = True
            else:
                with self._lock:
                    groups = list(self._groups.values())
                for group in groups:
                    group.wake(note.channel)
        return switched

    def _listen_to_applications(self, conn: psycopg.Connection) -> None:
        with self._lock:
            channels = {worker.app.recorder.channel_name for group in self._groups.values()
                        for worker in group.workers.values() if hasattr(worker.app.recorder, "channel_name")}
        for channel in channels - self._listening:
            conn.execute(SQL("LISTEN {}").format(Identifier(channel)))
            self._listening.add(channel)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None:
            self._conn = locks.connect(self._env)
            self._conn.execute(SQL("LISTEN {}").format(Identifier(versions.SWITCH_CHANNEL)))
            self._listening = set()
        return self._conn

    def _tick(self) -> None:
        conn = self._connection()
        live = versions.live_versions(conn.cursor(), self._schema)
        for name in self._names:
            group = self._groups.get(name)
            if group is not None and group.crashed_at is not None \
                    and time.monotonic() - group.crashed_at >= self._restart_delay:
                self._stop_group(name, release=True)   # this or another process restarts it
                group = None
            elif group is not None and name in live and live[name] != group.version:
                log.info("projection %s: following the switch from version %d to %d", name, group.version, live[name])
                self._stop_group(name, release=True)   # then taken again, at the live version
                group = None
            if group is None:
                self._take(conn, name)
        self._listen_to_applications(conn)

    def _take(self, conn: psycopg.Connection, name: str) -> None:
        key = locks.runner_key(self._schema, name)
        if not locks.try_lock(conn, key):
            return  # another process runs it
        try:
            self._upgrade(conn, name)
            group = self._start_group(name, None)
        except Exception as error:
            log_failure(log, "projection %s could not start; retrying", name, error=error)
            locks.unlock(conn, key)
            return
        log.info("running projection %s (version %d)", name, group.version)
        self._drop_old_versions(conn, name, group.version)

    def _upgrade(self, conn: psycopg.Connection, name: str) -> None:
        """A live copy made with an older schema lacks what the runners now write: rebuild it into a new
        copy first. Readers keep the old copy until the switch; the caller holds the runner lock."""
        live = versions.live_versions(conn.cursor(), self._schema).get(name)
        if live is None:
            return  # a new projection: its first copy is made with the current schema
        found = versions.schema_of(conn.cursor(), self._schema, name, live)
        wanted = spec(name).postgres_view.schema_version
        if found >= wanted:
            return
        log.warning("projection %s: live version %d has schema %d, older than %d; rebuilding it",
                    name, live, found, wanted)
        rebuild_blue_green(name, self._env, PAGE_SIZE, archive=self._archive)

    def _start_group(self, name: str, version: int | None) -> RunnerGroup:
        group = RunnerGroup(name, version, self._env, self._runner_env, archive=self._archive)
        with self._lock:
            self._groups[name] = group
        return group

    def _stop_group(self, name: str, release: bool) -> None:
        with self._lock:
            group = self._groups.pop(name)
            group.stop()
            self._errors.update({(name, app): error for app, error in group.errors.items()})
        if release and self._conn is not None:
            locks.unlock(self._conn, locks.runner_key(self._schema, name))

    def _drop_old_versions(self, conn: psycopg.Connection, name: str, live: int) -> None:
        """Versions below the live one are no one's any more: the lock holder owns them."""
        view_class = spec(name).postgres_view
        with conn.transaction():
            old = sorted(v for v in versions.existing_versions(conn.cursor(), self._schema, name) if v < live)
            if old or view_class.retired_tables:
                versions.ddl_lock(conn.cursor(), self._schema)
                # The readers' names over an older schema's tables first: they depend on those copies.
                versions.drop_retired(conn.cursor(), self._schema, view_class.retired_tables)
                for version in old:
                    versions.drop_version(conn.cursor(), self._schema, name, view_class.tables, version)
            if old:
                log.info("projection %s: dropped old version(s) %s", name, old)

    def _release_all(self) -> None:
        for name in list(self._groups):
            try:
                self._stop_group(name, release=False)  # their locks go below, all at once
            except Exception:
                log.exception("stopping projection %s failed", name)
        if self._conn is not None:
            try:
                # Closing the session would release the locks too, but only once its backend has ended,
                # after close() returns: `projections status` right after a stop still said `running`.
                locks.unlock_all(self._conn)
            except psycopg.Error:
                pass   # the session is gone already, and its locks with it
            finally:
                self._conn.close()
                self._conn = None

    # -- what ProjectionRunners also offers ------------------------------------------------------------
    @property
    def running(self) -> dict[str, int]:
        """The projections this process runs now, and the version of each it writes."""
        with self._lock:
            return {name: group.version for name, group in self._groups.items()}

    @property
    def errors(self) -> dict[tuple[str, str], BaseException]:
        """(projection, application) -> the error that crashed it (also after a restart)."""
        with self._lock:
            current = {(g.name, app): e for g in self._groups.values() for app, e in g.errors.items()}
            return {**self._errors, **current}

    def status(self) -> list[ProjectionStatus]:
        """Only the projections this process runs; `entrepot projections status` shows them all."""
        with self._lock:
            return [s for group in self._groups.values() for s in group.status()]

    def wait_caught_up(self, timeout: float = 10.0, interval: float = 0.005) -> None:
        """Block until every projection this process runs has processed its apps' current max notification id."""
        def check() -> None:
            with self._lock:
                crashed = [(g.name, app, e) for g in self._groups.values() for app, e in g.errors.items()]
            for name, app, error in crashed:
                raise ProjectionCrashed(f"projection {name} crashed following {app}: {error!r}") from error

        with self._lock:
            targets = [(g.view, app, worker.head()) for g in self._groups.values() for app, worker in g.workers.items()]
        wait_for(targets, timeout, interval, check)


def _runner_env(env: dict[str, str]) -> dict[str, str]:
    """Each worker's own app instance reads pages with one connection, closed when idle (P9)."""
    out = dict(env)
    for app_name in APPLICATIONS:
        out[f"{app_name.upper()}_POSTGRES_POOL_SIZE"] = "0"
        out[f"{app_name.upper()}_POSTGRES_MAX_OVERFLOW"] = "2"
    return out
