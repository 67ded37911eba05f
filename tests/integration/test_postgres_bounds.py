"""No writer holds the events table lock for long, and no call waits long on a blocked PostgreSQL (real PostgreSQL)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from application.errors import EventStoreUnavailable
from application.cache_records import CacheRecords
from infra import bounded_postgres as bounds

pytestmark = pytest.mark.integration

BIG = 9_000_000   # the admin request that wedged the cache carried a 9,000,000-character username


def connect(env) -> psycopg.Connection:
    return psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                           dbname=env["POSTGRES_DBNAME"], autocommit=True, connect_timeout=3)


def events_table_locks(env) -> list[tuple]:
    with connect(env) as conn:
        return conn.execute(
            "SELECT l.mode, l.granted, l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'registry_events'",
            (env["POSTGRES_SCHEMA"],)).fetchall()


def in_thread(call, timeout: float):
    """(finished, result or exception, seconds): the call in a daemon thread, waited for at most `timeout`."""
    outcome: list = []
    started = time.monotonic()

    def run():
        try:
            outcome.append(call())
        except Exception as error:
            outcome.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return (not thread.is_alive(), outcome[0] if outcome else None, time.monotonic() - started)


def test_a_9_mb_event_is_saved_and_leaves_no_lock_behind_so_the_next_writer_is_not_blocked(postgres_env_factory):
    env = postgres_env_factory("wedge")
    records = CacheRecords(env=env)
    try:
        # The admin API refuses such a username now (bounded fields); the event store itself must still
        # take a 9 MB event without wedging, whatever brings one (here a corruption report's detail).
        head = records.recorder.max_notification_id() or 0
        finished, result, _ = in_thread(
            lambda: records.record_corruption("big", "library/big", "sha256:" + "b" * 64, "u" * BIG, 1.0), 30)
        assert finished, f"saving a 9 MB event hung; locks on registry_events: {events_table_locks(env)}"
        assert not isinstance(result, Exception), result
        finished, result, took = in_thread(lambda: records.apply_org("small", {"upstream": "http://127.0.0.1:1"}),
                                           10)
        assert finished and result is True and took < 5
        assert events_table_locks(env) == []
        saved = records.recorder.select_notifications(head + 1, 1)
        assert len(records.mapper.to_domain_event(saved[0]).detail) == BIG
    finally:
        records.close()


def test_a_writer_waiting_for_the_table_lock_gives_up_after_the_lock_timeout(postgres_env_factory):
    env = postgres_env_factory("locked")
    records = CacheRecords(env=env)
    try:
        records.apply_org("first", {"upstream": "http://127.0.0.1:1"})   # creates the tables
        with connect(env) as holder:
            with holder.transaction():
                holder.execute(f'LOCK TABLE "{env["POSTGRES_SCHEMA"]}".registry_events IN EXCLUSIVE MODE')
                finished, result, took = in_thread(
                    lambda: records.apply_org("second", {"upstream": "http://127.0.0.1:1"}), 20)
        assert finished, "a writer queued behind a held table lock for good"
        assert isinstance(result, EventStoreUnavailable)
        assert bounds.LOCK_TIMEOUT <= took < bounds.LOCK_TIMEOUT + 3
        records.apply_org("second", {"upstream": "http://127.0.0.1:1"})   # the lock is gone: it works again
    finally:
        records.close()


def test_a_session_idle_inside_a_transaction_is_ended_by_the_server(postgres_env_factory):
    env = postgres_env_factory("idle")
    records = CacheRecords(env=env)
    try:
        records.apply_org("first", {"upstream": "http://127.0.0.1:1"})
        with records.recorder.datastore.get_connection() as conn:
            timeout = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert list(timeout.values()) == [f"{bounds.IDLE_IN_TRANSACTION}s"]
    finally:
        records.close()


def test_a_write_transaction_is_bounded_by_the_sessions_idle_timeout_as_configured(postgres_env_factory):
    """SET LOCAL inside each write repeats the session's bound: 5 s as served, longer when the env says so."""
    for seconds, expected in ((None, f"{bounds.IDLE_IN_TRANSACTION}s"), ("120", "2min")):
        env = postgres_env_factory(f"idle{seconds or 5}")
        if seconds:
            env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] = seconds
        records = CacheRecords(env=env)
        try:
            records.apply_org("first", {"upstream": "http://127.0.0.1:1"})
            with records.recorder.datastore.get_connection() as conn, conn.transaction():
                for statement in records.recorder.lock_table_statements[:2]:
                    conn.execute(statement)
                timeout = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
            assert list(timeout.values()) == [expected]
        finally:
            records.close()


def test_calls_fail_fast_while_the_database_refuses_connections_and_work_again_once_it_is_back(
        postgres_env_factory, postgres_url):
    env = postgres_env_factory("blocked")
    records = CacheRecords(env=env)
    dbname = env["POSTGRES_DBNAME"]
    try:
        records.apply_org("first", {"upstream": "http://127.0.0.1:1"})
        with psycopg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            try:
                took = []
                for name in ("a", "b", "c"):
                    finished, result, seconds = in_thread(
                        lambda: records.apply_org(name, {"upstream": "http://127.0.0.1:1"}), 20)
                    assert finished and isinstance(result, EventStoreUnavailable), result
                    took.append(seconds)
                # The first call waits up to the connect timeout; once the pool saw the database
                # refuse, the next ones fail in a fraction of a second.
                assert took[0] < bounds.CONNECT_TIMEOUT + 2 and max(took[1:]) < 1.5, took
                with pytest.raises(psycopg.OperationalError):
                    bounds.check_connection(env)
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        started = time.monotonic()
        while True:
            try:
                records.apply_org("back", {"upstream": "http://127.0.0.1:1"})
                break
            except EventStoreUnavailable:
                assert time.monotonic() - started < 5, "the event store did not come back within 5 s"
                time.sleep(0.1)
        assert time.monotonic() - started < 3
        bounds.check_connection(env)
    finally:
        records.close()
