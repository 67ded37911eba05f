"""Commit signals: a commit to one log wakes the workers following that log, and no other."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from application.cache_records import CacheRecords
from application.pulls import Pulls
from infra.commit_signals import CommitSignals, log_of
from tests.support.postgres import embedded_env


def sqlite_recorder(path: str, table: str = "stored_events"):
    return SimpleNamespace(datastore=SimpleNamespace(pool=SimpleNamespace(db_name=path)), events_table_name=table)


def test_a_commit_wakes_the_workers_of_its_log_only():
    signals = CommitSignals()
    pulls, records = log_of(sqlite_recorder("/data/pulls.db")), log_of(sqlite_recorder("/data/registry.db"))
    audit, counters, orgs = threading.Event(), threading.Event(), threading.Event()
    signals.subscribe(pulls, audit)
    signals.subscribe(pulls, counters)
    signals.subscribe(records, orgs)

    signals.committed(pulls)

    assert audit.is_set() and counters.is_set() and not orgs.is_set()


def test_an_unsubscribed_worker_is_not_woken():
    signals = CommitSignals()
    pulls = log_of(sqlite_recorder("/data/pulls.db"))
    stopped = threading.Event()
    signals.subscribe(pulls, stopped)
    signals.unsubscribe(pulls, stopped)

    signals.committed(pulls)

    assert not stopped.is_set()


def test_postgres_logs_differ_by_database_schema_and_table():
    def recorder(dbname: str, schema: str, table: str):
        pool = SimpleNamespace(kwargs={"host": "127.0.0.1", "port": 5432, "dbname": dbname})
        return SimpleNamespace(datastore=SimpleNamespace(pool=pool, schema=schema), events_table_name=table)

    assert log_of(recorder("entrepot", "a", "pulls_events")) == log_of(recorder("entrepot", "a", "pulls_events"))
    assert len({log_of(recorder("entrepot", "a", "pulls_events")), log_of(recorder("other", "a", "pulls_events")),
                log_of(recorder("entrepot", "b", "pulls_events")),
                log_of(recorder("entrepot", "a", "registry_events"))}) == 4


def test_the_embedded_apps_real_recorders_write_different_logs(tmp_path):
    """On the real SQLite recorders, not only on the shapes above: once, every SQLite log had the same key
    (the file's name had moved to the datastore's pool), so a commit to any log woke every worker."""
    env = embedded_env(tmp_path)
    pulls, records, again = Pulls(env=env), CacheRecords(env=env), Pulls(env=env)
    try:
        assert log_of(pulls.recorder) != log_of(records.recorder)
        assert log_of(pulls.recorder) == log_of(again.recorder)
        assert log_of(pulls.recorder)[0] == "sqlite" and str(tmp_path) in log_of(pulls.recorder)[1]
    finally:
        for app in (pulls, records, again):
            app.close()
