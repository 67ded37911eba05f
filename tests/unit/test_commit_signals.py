"""Commit signals: a commit to one log wakes the workers following that log, and no other."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from infra.commit_signals import CommitSignals, log_of


def sqlite_recorder(path: str, table: str = "stored_events"):
    return SimpleNamespace(datastore=SimpleNamespace(db_name=path), events_table_name=table)


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
