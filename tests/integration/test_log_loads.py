"""A bulk rebuild on PostgreSQL has the server fill the audit view straight from the Pulls log
(infra/projection_runtime/log_loads.py): the same rows as replaying it, for every stored version of a pull,
in chunks, catching up with pulls recorded while it loads; on SQLite every view replays."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import StoredEvent

from application.pulls import Pulls
from domain.pull import Pull
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport
from infra.projection_runtime import log_loads
from infra.projection_runtime.opening import is_postgres
from infra.projection_runtime.rebuild import rebuild_many
from projections.audit import PostgresAuditView, upcast_defaults
from tests.support.views import view_dumps

pytestmark = pytest.mark.integration

# What each stored version of Pull.Recorded lacked (None: written before versions were recorded).
SHAPES = {None: ("note", "status", "error_code", "actor", "generation"),
          1: ("note", "status", "error_code", "actor", "generation"),
          2: ("status", "error_code", "actor", "generation"),
          3: ("actor", "generation"),
          4: ("generation",),
          5: ()}


@pytest.fixture
def env(env_factory):
    return env_factory("main")


def pull(n: int) -> Pull.Recorded:
    return Pull.recorded("hub", f"library/ïmage{n}", "3.19" if n % 2 else "sha256:" + "a" * 64, "sha256:" + "1" * 64,
                         ("hit", "miss", "stale", "error", "denied")[n % 5], f"10.0.0.{n}", "containerd/2.0 \"quoted\" ✓",
                         1_700_000_000.123456 + n / 7 if n % 4 else 1_700_000_000 + n, note="upstream said\n503" if n % 3 else "",
                         status=(200, 503)[n % 2], error_code="" if n % 2 == 0 else "UNAVAILABLE",
                         actor=("anonymous", "private+ci", "admin")[n % 3], generation=1 + n % 3)


def store(pulls: Pulls, event: Pull.Recorded, version: int | None) -> None:
    """Store the pull as the code of `version` would have: without the later fields, with that class_version."""
    stored = pulls.mapper.to_stored_event(event)
    state = pulls.mapper.transcoder.decode(stored.state)
    for name in (*SHAPES[version], "class_version"):
        state.pop(name, None)
    if version is not None:
        state["class_version"] = version
    pulls.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                              pulls.mapper.transcoder.encode(state))])


def traffic(at: float) -> TrafficReport.Recorded:
    return TrafficReport(org="hub", process="test:1", since=at - 5, until=at, bytes_served={"blob": 1},
                         bytes_fetched={}, blob_pulls={}, fills=0, fill_seconds=[0] * (len(FILL_SECONDS_BUCKETS) + 1),
                         fills_failed=0, repositories={}).collect_events()[0]


def test_the_upcasts_defaults_are_what_an_old_pull_reads_with():
    assert upcast_defaults() == {"note": "", "status": 200, "error_code": "", "actor": "anonymous", "generation": 1}


def test_audit_loaded_by_the_server_is_audit_replayed_for_every_stored_version(env, monkeypatch):
    pulls = Pulls(env=env)
    try:
        for n, version in enumerate([*SHAPES] * 4):
            store(pulls, pull(n), version)
            if n % 7 == 0:   # another topic of the same log, which the audit view does not take
                pulls.recorder.insert_events([pulls.mapper.to_stored_event(traffic(1_700_000_000.0 + n))])
        replayed = rebuild_many(("audit",), env, page_size=5, bulk_events=0)   # page by page: Python's rows
        expected = view_dumps(env, ("audit",))
        assert replayed == {"audit": {"Pulls": 4 * len(SHAPES)}} and len(expected["audit"]["audit"]) == 24

        loads = []
        load = PostgresAuditView.load_from_log

        def counted(self, application, events_table, topic, after, last):
            if not loads:   # pulls recorded while the server loads: the catch-up replays them
                for n in range(100, 103):
                    store(pulls, pull(n), 5)
            loads.append((after, last))
            return load(self, application, events_table, topic, after, last)

        if not is_postgres(env):   # no load to record them during: recorded before
            for n in range(100, 103):
                store(pulls, pull(n), 5)
        monkeypatch.setattr(PostgresAuditView, "load_from_log", counted)
        monkeypatch.setattr(log_loads, "LOAD_CHUNK", 7)
        replayed = rebuild_many(("audit",), env, page_size=5, bulk_events=20)
        assert replayed == {"audit": {"Pulls": 4 * len(SHAPES) + 3}}
        loaded = view_dumps(env, ("audit",))
        if is_postgres(env):
            assert len(loads) >= 4 and loads[0][0] == 0 and all(a[1] == b[0] for a, b in zip(loads, loads[1:]))
        else:
            assert loads == []
        # The rows loaded are the rows replayed, plus the three pulls that came during the load.
        before, after = set(expected["audit"]["audit"]), set(loaded["audit"]["audit"])
        assert before <= after and len(after - before) == 3
        assert min(row[0] for row in after - before) > max(row[0] for row in before)
        assert loaded["audit"]["audit_times"]
        assert rebuild_many(("audit",), env, page_size=5, bulk_events=0) == replayed
        assert view_dumps(env, ("audit",)) == loaded
    finally:
        pulls.close()
