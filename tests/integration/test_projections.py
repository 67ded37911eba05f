"""The read model end to end on SQLite and PostgreSQL: real CacheRecords and Pulls apps, runners, restart, rebuild."""

from __future__ import annotations

import logging
import sqlite3
import time

import psycopg
import pytest

from application.pulls import Pulls
from application.cache_records import CacheRecords
from domain.pull import Pull
from domain.referrers import Referrer
from infra.projection_runtime import (ProjectionCrashed, open_tags_and_manifests, open_view, projection_runners, rebuild, status,
                                     wait_caught_up)
from infra.projection_runtime.progress import wait_for
from infra.projection_runtime.rebuild import rebuild_many
from infra.projection_runtime.replay import replay
from infra.commit_signals import COMMITS
from infra.projection_runtime import workers
from infra.projection_runtime.workers import ProjectionWorker
from projections import PROJECTION_NAMES
from projections.audit import AuditView
from tests.support.views import blob_row, manifest_pulls

pytestmark = pytest.mark.integration

ORG, REPO = "hub", "library/alpine"
IMAGE, INDEX = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"
M1, M2, IDX = ("sha256:" + c * 64 for c in "129")
SIG = "sha256:" + "5" * 64
CONFIG, L1, L2 = ("sha256:" + c * 64 for c in "cab")


@pytest.fixture
def env(env_factory):
    return env_factory("main")   # one per backend (tests/support/postgres.py)


@pytest.fixture
def apps(env):
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    yield records, pulls
    records.close()
    pulls.close()


@pytest.fixture
def runners(env):
    started = []

    def start():
        started.append(projection_runners(env).start())
        return started[-1]

    yield start
    for r in started:
        r.stop()


def pull(pulls, digest, result, at, reference="3.20"):
    pulls.record(Pull(org=ORG, repository=REPO, reference=reference, digest=digest, result=result,
                      client="10.1.2.3", user_agent="docker/27.0", at=at))


def populate(records, pulls):
    records.apply_org(ORG, {"upstream": "docker.io"})
    records.apply_org("ghcr", {"upstream": "ghcr.io", "staleness_seconds": 60})
    records.apply_org("ghcr", {"upstream": "ghcr.io", "staleness_seconds": 120})
    records.apply_org("old", {"upstream": "quay.io"})
    records.delete_org("old")
    # A cold pull of an index: its manifests and tag first, the pulls, then the blobs as the client fetches them.
    records.record_manifest(ORG, REPO, IDX, INDEX, 300, [], [M1], 10.0)
    records.record_manifest(ORG, REPO, M1, IMAGE, 900, [CONFIG, L1], [], 10.0)
    records.record_tag(ORG, REPO, "3.20", IDX, INDEX, 10.0)
    records.record_tag(ORG, REPO, "latest", M1, IMAGE, 10.0)
    pull(pulls, IDX, "miss", 10.0)
    pull(pulls, M1, "miss", 10.5, reference=M1)
    records.record_blob(ORG, REPO, CONFIG, 5, 11.0)
    records.record_blob(ORG, REPO, L1, 70, 12.0)
    records.record_tag(ORG, REPO, "3.20", IDX, INDEX, 20.0)                 # revalidated
    records.record_manifest(ORG, REPO, M2, IMAGE, 800, [CONFIG, L2], [], 30.0)
    records.record_tag(ORG, REPO, "latest", M2, IMAGE, 30.0)               # retargeted
    pull(pulls, M1, "hit", 40.0, reference=M1)
    pull(pulls, M2, "stale", 41.0, reference="latest")
    # A signature of M1 (OCI 1.1: a manifest with a subject), pulled by digest.
    records.record_manifest(ORG, REPO, SIG, IMAGE, 400, [CONFIG], [], 50.0,
                            referrer=Referrer(M1, "application/vnd.dev.cosign.simplesigning.v1+json", {"a": "b"}))


def dumps(env):
    out = {}
    for name in PROJECTION_NAMES:
        view = open_view(name, env)
        out[name] = view.dump()
        view.close()
    return out


def test_runners_build_every_view_and_report_zero_lag(env, apps, runners):
    records, pulls = apps
    populate(records, pulls)
    live = runners()
    live.wait_caught_up(timeout=10)
    assert {(s.projection, s.application) for s in live.status()} == {
        ("tags", "Registry"), ("manifests", "Registry"), ("blobs", "Registry"), ("blobs", "Pulls"),
        ("audit", "Pulls"), ("counters", "Pulls"), ("orgs", "Registry"), ("referrers", "Registry"),
        ("analytics", "Pulls"), ("analytics", "Registry"), ("retention", "Registry"), ("retention", "Pulls"),
        ("history", "Registry"), ("chain", "Pulls"), ("chain", "Access")}
    for s in live.status():
        assert (s.lag, s.state, s.error) == (0, "running", None)
        # This history has no admin event: the chain's Access log is empty (test_audit_chain covers it).
        assert s.position == s.max_notification_id > 0 or (s.application, s.max_notification_id) == ("Access", 0)

    cache = open_tags_and_manifests(env)
    try:
        assert cache.get_tag(ORG, REPO, "3.20").checked_at == 20.0
        assert cache.get_tag(ORG, REPO, "latest").digest == M2
        assert cache.list_tags(ORG, REPO) == ["3.20", "latest"]
        assert cache.get_manifest(ORG, REPO, IDX).children == [M1]
        assert cache.get_manifest(ORG, REPO, M2).blobs == [CONFIG, L2]
    finally:
        cache.close()
    referrers = open_view("referrers", env)
    try:
        assert [(d.digest, d.artifact_type, dict(d.annotations)) for d in referrers.referrers(ORG, REPO, M1)] == [
            (SIG, "application/vnd.dev.cosign.simplesigning.v1+json", {"a": "b"})]
    finally:
        referrers.close()

    blobs, audit, counters, orgs = (open_view(n, env) for n in ("blobs", "audit", "counters", "orgs"))
    try:
        # M1 pulled twice, M2 once; the index pull counts for the index only.
        assert (blob_row(blobs, ORG, CONFIG).pull_count, blob_row(blobs, ORG, CONFIG).last_pulled) == (3, 41.0)
        assert (blob_row(blobs, ORG, L1).pull_count, blob_row(blobs, ORG, L1).last_pulled) == (2, 40.0)
        assert blob_row(blobs, ORG, L2) is None                        # pulled, never cached
        assert manifest_pulls(blobs, ORG, REPO, IDX) == (1, 10.0)
        assert [r.result for r in audit.query(org=ORG)] == ["miss", "miss", "hit", "stale"]
        assert counters.counts() == {ORG: {"miss": 2, "hit": 1, "stale": 1}}
        assert [o.name for o in orgs.list_orgs()] == ["ghcr", ORG]
        assert orgs.get_org("ghcr").settings["staleness_seconds"] == 120
        assert orgs.get_org("old").deleted
    finally:
        for view in (blobs, audit, counters, orgs):
            view.close()

    # A new pull reaches the running views.
    pull(pulls, M1, "hit", 50.0, reference=M1)
    live.wait_caught_up(timeout=10)
    counters = open_view("counters", env)
    assert counters.counts(ORG)[ORG]["hit"] == 2
    counters.close()


def test_restart_catches_up_without_double_counting(env, apps, runners):
    records, pulls = apps
    populate(records, pulls)
    first = runners()
    first.wait_caught_up(timeout=10)
    first.stop()
    pull(pulls, M1, "hit", 60.0, reference=M1)          # recorded while no runner is running
    pull(pulls, M1, "revalidated", 61.0)
    assert {s.lag for s in status(env) if s.application == "Pulls"} == {2}
    second = runners()
    second.wait_caught_up(timeout=10)
    assert all(s.lag == 0 for s in second.status())
    counters, blobs, audit = (open_view(n, env) for n in ("counters", "blobs", "audit"))
    try:
        assert counters.counts() == {ORG: {"miss": 2, "hit": 2, "stale": 1, "revalidated": 1}}
        assert blob_row(blobs, ORG, L1).pull_count == 4 and blob_row(blobs, ORG, L1).last_pulled == 61.0
        assert [r.id for r in audit.query()] == [1, 2, 3, 4, 5, 6]
    finally:
        for view in (counters, blobs, audit):
            view.close()


def test_rebuild_yields_the_same_rows_as_the_live_projection(env, apps, runners):
    records, pulls = apps
    populate(records, pulls)
    live = runners()
    live.wait_caught_up(timeout=10)
    live.stop()
    before = dumps(env)
    assert all(any(rows for table, rows in dump.items() if table != "tracking") for dump in before.values())
    for name in PROJECTION_NAMES:
        replayed = rebuild(name, env, page_size=3)      # small pages: several transactions per app
        # Every followed log is replayed; analytics takes only evictions from Registry, and this history
        # has none (test_analytics_view covers them); the chain's Access log is empty here (test_audit_chain).
        assert replayed and all(n > 0 for app, n in replayed.items()
                                if (name, app) not in {("analytics", "Registry"), ("chain", "Access")})
    assert dumps(env) == before
    assert all(s.lag == 0 for s in status(env))
    # A runner started after a rebuild resumes from the rebuilt position: nothing counted twice.
    runners().wait_caught_up(timeout=10)
    assert dumps(env) == before


def test_rebuilding_every_view_in_one_pass_yields_the_same_rows_as_the_live_projection(env, apps, runners):
    records, pulls = apps
    populate(records, pulls)
    for n in range(40):   # pulls spread over several pages, both before and after the runners start
        pull(pulls, (M1, M2, IDX)[n % 3], ("hit", "miss", "stale", "revalidated")[n % 4], 100.0 + n)
    live = runners()
    live.wait_caught_up(timeout=10)
    live.stop()
    before = dumps(env)
    seconds: dict[str, float] = {}
    replayed = rebuild_many(PROJECTION_NAMES, env, page_size=7, seconds=seconds)
    assert replayed["audit"] == {"Pulls": 44} and replayed["counters"] == {"Pulls": 44}
    assert set(seconds) == set(PROJECTION_NAMES)
    assert dumps(env) == before
    assert all(s.lag == 0 for s in status(env))
    runners().wait_caught_up(timeout=10)
    assert dumps(env) == before


def test_wait_caught_up_for_views_run_elsewhere(env, apps, runners):
    records, pulls = apps
    populate(records, pulls)
    runners()
    wait_caught_up(env, timeout=10)
    assert all(s.lag == 0 for s in status(env))


def drop_counters_table(env) -> str:
    """Break the counters view under its runner; returns what the runner's error then says."""
    if "COUNTERS_SQLITE_DBNAME" in env:
        with sqlite3.connect(env["COUNTERS_SQLITE_DBNAME"]) as conn:
            conn.execute("DROP TABLE counters")
        return "no such table"
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         dbname=env["POSTGRES_DBNAME"], autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{env["POSTGRES_SCHEMA"]}".counters_v1 CASCADE')  # and the readers' SQL view
    return "does not exist"


def test_a_crashed_projection_is_logged_and_reported(env, apps, runners, caplog):
    records, pulls = apps
    populate(records, pulls)
    live = runners()
    live.wait_caught_up(timeout=10)
    message = drop_counters_table(env)                  # the next pull cannot be counted
    with caplog.at_level(logging.ERROR, logger="projections"):
        pull(pulls, M1, "hit", 70.0, reference=M1)
        with pytest.raises(ProjectionCrashed, match="counters"):
            live.wait_caught_up(timeout=10)
    states = {(s.projection, s.application): s for s in live.status()}
    crashed = states[("counters", "Pulls")]
    assert crashed.state == "crashed" and message in crashed.error and crashed.lag == 1
    assert states[("audit", "Pulls")].state == "running"
    assert any("counters" in record.getMessage() for record in caplog.records)
    live.stop()                                         # stops cleanly despite the crashed runner
    assert ("counters", "Pulls") in live.errors


def test_blobs_view_under_concurrent_writes_to_both_apps_matches_a_rebuild(env, apps, runners):
    records, pulls = apps
    live = runners()
    layers = [f"sha256:{i:064x}" for i in range(40)]
    records.record_manifest(ORG, REPO, M1, IMAGE, 900, layers, [], 1.0)
    for i, layer in enumerate(layers):      # both apps written while both blobs runners run
        records.record_blob(ORG, REPO, layer, i, 2.0)
        pulls.record(*(Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="hit", client="c",
                            user_agent="u", at=3.0 + i + j / 10) for j in range(5)))
    live.wait_caught_up(timeout=20)
    live.stop()
    blobs = open_view("blobs", env)
    try:
        assert {(b.pull_count, b.last_pulled) for b in blobs.list_blobs(ORG)} == {(200, 42.4)}
        before = blobs.dump()
    finally:
        blobs.close()
    rebuild("blobs", env)
    assert dumps(env)["blobs"] == before


# The audit table as it was before status, error_code and note (schema version 1).
OLD_AUDIT_TABLE = ("(id {int} PRIMARY KEY, org {text} NOT NULL, repository {text} NOT NULL, reference {text} NOT NULL, "
                   "digest {text} NOT NULL, result {text} NOT NULL, client {text} NOT NULL, user_agent {text} NOT NULL, "
                   "at {real} NOT NULL)")
OLD_AUDIT_COLUMNS = "id, org, repository, reference, digest, result, client, user_agent, at"


def make_audit_view_old(env, pulls) -> None:
    """Leave the audit view as an older release left it: its rows and tracking, in the old table shape,
    with no record of a schema version (the older release kept none)."""
    view = open_view("audit", env)
    try:
        replay(view, pulls, AuditView.handled_topics(), page_size=100)
    finally:
        view.close()
    if "AUDIT_SQLITE_DBNAME" in env:
        with sqlite3.connect(env["AUDIT_SQLITE_DBNAME"]) as conn:
            conn.executescript(f"""
                ALTER TABLE audit RENAME TO audit_new;
                CREATE TABLE audit {OLD_AUDIT_TABLE.format(int="INTEGER", text="TEXT", real="REAL")};
                INSERT INTO audit SELECT {OLD_AUDIT_COLUMNS} FROM audit_new;
                DROP TABLE audit_new;
                CREATE INDEX audit_org ON audit (org, repository, id);
                PRAGMA user_version = 0;""")
        return
    schema = f'"{env["POSTGRES_SCHEMA"]}"'
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         dbname=env["POSTGRES_DBNAME"], autocommit=True) as conn:
        conn.execute(f"DROP VIEW {schema}.audit")
        conn.execute(f"ALTER TABLE {schema}.audit_v1 RENAME TO audit_new")
        conn.execute(f"CREATE TABLE {schema}.audit_v1 "
                     + OLD_AUDIT_TABLE.format(int="bigint", text="text", real="double precision"))
        conn.execute(f"INSERT INTO {schema}.audit_v1 SELECT {OLD_AUDIT_COLUMNS} FROM {schema}.audit_new")
        conn.execute(f"DROP TABLE {schema}.audit_new")
        conn.execute(f"CREATE VIEW {schema}.audit AS SELECT * FROM {schema}.audit_v1")
        conn.execute(f"DROP TABLE {schema}.view_schemas")


def test_an_audit_view_of_the_older_schema_is_rebuilt_when_the_runners_start(env, apps, runners):
    _, pulls = apps
    note = "upstream unavailable (503): down; serving the cached copy"
    pulls.record(Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="hit", client="10.1.2.3",
                      user_agent="docker/27.0", at=1.0),
                 Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="stale", client="10.1.2.3",
                      user_agent="docker/27.0", at=2.0, note=note))
    make_audit_view_old(env, pulls)
    pulls.record(Pull(org=ORG, repository=REPO, reference="gone", digest="", result="error", client="10.1.2.3",
                      user_agent="docker/27.0", at=3.0, note="manifest gone is unknown upstream", status=404,
                      error_code="MANIFEST_UNKNOWN"))

    runners().wait_caught_up(timeout=20)

    audit = open_view("audit", env)
    try:
        # The stale note comes back from the events: the view was rebuilt, not given empty columns.
        assert [(r.id, r.result, r.status, r.error_code, r.note) for r in audit.query()] == [
            (1, "hit", 200, "", ""), (2, "stale", 200, "", note),
            (3, "error", 404, "MANIFEST_UNKNOWN", "manifest gone is unknown upstream")]
    finally:
        audit.close()


def test_a_worker_writes_a_backlog_one_view_transaction_per_page(env, apps):
    _, pulls = apps
    pulls.record(*(Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="hit", client="10.1.2.3",
                        user_agent="docker/27.0", at=float(i)) for i in range(1200)))
    view = open_view("counters", env)
    pages = []
    process = view.process
    view.process = lambda batch: (pages.append(len(batch)), process(batch))   # count the view's transactions
    worker = ProjectionWorker("counters", view, Pulls, env, page_size=500).start()
    try:
        wait_for([(view, "Pulls", 1200)], timeout=20, interval=0.01)
        assert worker.state == "running" and worker.error is None
    finally:
        worker.stop()
    try:
        assert pages == [500, 500, 200]
        assert view.counts() == {ORG: {"hit": 1200}}
        assert view.max_tracking_id("Pulls") == pulls.recorder.max_notification_id()
    finally:
        view.close()


def test_idle_workers_wake_on_a_commit_of_this_process_not_on_a_poll(env, apps, monkeypatch):
    """An idle worker sleeps until a writer of this process commits to its log: with the fallback poll
    an hour away, the view still follows each new write."""
    monkeypatch.setattr(workers, "IDLE_POLL", 3600.0)
    records, pulls = apps
    view = open_view("counters", env)
    worker = ProjectionWorker("counters", view, Pulls, env).start()
    try:
        for number in range(1, 4):
            pull(pulls, M1, "hit", float(number))
            wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
            assert view.counts() == {ORG: {"hit": number}}
        assert worker.state == "running" and worker.error is None
    finally:
        worker.stop()
        view.close()


def test_a_burst_of_commits_is_read_together_not_one_read_per_commit(env, apps, monkeypatch):
    """The commits that follow a read within GATHER wait for it to run out and are read together: one
    view transaction for the burst, not one per commit (a cold pull's dozen commits woke every worker
    of their log each)."""
    monkeypatch.setattr(workers, "IDLE_POLL", 3600.0)
    monkeypatch.setattr(workers, "GATHER", 0.5)
    _, pulls = apps
    view = open_view("counters", env)
    pages = []
    process = view.process
    view.process = lambda batch: (pages.append(len(batch)), process(batch))
    worker = ProjectionWorker("counters", view, Pulls, env).start()
    try:
        pull(pulls, M1, "hit", 1.0)
        wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
        assert pages == [1]
        for number in range(2, 12):   # ten commits, well within GATHER of the first read
            pull(pulls, M1, "hit", float(number))
        wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
        assert sum(pages) == 11 and len(pages) <= 3, pages   # the burst in one or two reads, not ten
        assert view.counts() == {ORG: {"hit": 11}}
        assert worker.state == "running" and worker.error is None
    finally:
        worker.stop()
        view.close()


def test_someone_waiting_for_the_views_ends_a_gathering_at_once(env, apps, monkeypatch):
    """A flush, a pin, a seal or a test waiting for the views (wait_for enters HURRY) does not also wait out
    the gathering window: the gathering workers read at once. Without a waiter they keep gathering."""
    monkeypatch.setattr(workers, "IDLE_POLL", 3600.0)
    monkeypatch.setattr(workers, "GATHER", 60.0)
    _, pulls = apps
    view = open_view("counters", env)
    worker = ProjectionWorker("counters", view, Pulls, env).start()
    try:
        pull(pulls, M1, "hit", 1.0)   # within GATHER of the worker's first read: it gathers
        wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
        assert view.counts() == {ORG: {"hit": 1}}
        pull(pulls, M1, "hit", 2.0)
        time.sleep(0.3)
        assert view.counts() == {ORG: {"hit": 1}}   # nobody waits: the worker is still gathering
        wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
        assert view.counts() == {ORG: {"hit": 2}}
        assert worker.state == "running" and worker.error is None
    finally:
        worker.stop()
        view.close()


def test_a_write_no_commit_signal_announces_is_found_by_the_fallback_poll(env, monkeypatch):
    """Another process's writes wake no worker here: the worker's own poll finds them."""
    monkeypatch.setattr(workers, "IDLE_POLL", 0.05)
    view = open_view("counters", env)
    worker = ProjectionWorker("counters", view, Pulls, env).start()
    pulls = Pulls(env=env)
    try:
        monkeypatch.setattr(COMMITS, "committed", lambda log: None)   # as if written by another process
        pull(pulls, M1, "hit", 1.0)
        wait_for([(view, "Pulls", pulls.recorder.max_notification_id())], timeout=10, interval=0.01)
        assert view.counts() == {ORG: {"hit": 1}}
    finally:
        worker.stop()
        view.close()
        pulls.close()
