"""Retention with archive on SQLite and PostgreSQL: old pulls move to chained segments, leave the event store,
the audit view and the chain view; audit queries and `verify` read across the boundary; a SIGKILL at any
step of a round loses and duplicates nothing (issue 14, part 2)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from application.audit import AuditFilter, AuditLog
from application.audit_seals import AuditSeals, read_seals
from domain.audit_chain import PULL_TOPIC
from domain.pull import Pull
from infra.projection_runtime.runners import ProjectionRunners
from infra.settings import load_settings
from interfaces.bootstrap import OfflineAudit, verify_audit
from infra.archived_audit import ArchivedAudit
from tests.support.audit_store import config_for
from tests.support.cli import run_in_process
from tests.support.clock import ManualClock

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OLD, RECENT = 40, 5


@pytest.fixture
def env(env_factory):
    return env_factory("main")


@pytest.fixture
def config(env, tmp_path):
    return config_for(env, tmp_path, "[audit]\nretain_days = 30\n")


@pytest.fixture
def audit(config, env):
    """The stores opened from the config (as the CLI opens them), with every view running."""
    runners = ProjectionRunners(env).start()
    opened = OfflineAudit(load_settings(str(config)))
    record(opened)
    runners.wait_caught_up(timeout=30)
    opened.runners = runners
    yield opened
    runners.stop()
    opened.close()


def record(audit: OfflineAudit) -> None:
    """40 pulls from long ago (three clients, two orgs), an admin action, then 5 from now."""
    now = time.time()
    for i in range(OLD):
        audit.pulls.record(Pull(org="hub" if i % 2 else "ghcr", repository="library/alpine", reference="3.20",
                                digest="sha256:" + "a" * 64, result="hit" if i % 3 else "miss",
                                client=f"10.0.0.{i % 3}", user_agent="skopeo/1.9", at=1_000_000.0 + i))
    audit.access.record_action("admin", "org.update", "hub", "hub", "staleness", 1_000_000.0)
    for i in range(RECENT):
        audit.pulls.record(Pull(org="hub", repository="library/alpine", reference="3.20", digest="sha256:" + "b" * 64,
                                result="hit", client="10.0.0.9", user_agent="podman", at=now + i))


def audit_log(audit: OfflineAudit) -> AuditLog:
    return AuditLog(ArchivedAudit(audit.views["audit"], audit.archive, audit.pulls.mapper))


def all_rows(log: AuditLog, **filters) -> list:
    return [row for page in log.export(AuditFilter(**filters)) for row in page]


def stored_pull_ids(audit: OfflineAudit) -> list[str]:
    page = audit.pulls.recorder.select_notifications(start=1, limit=10_000, topics=[PULL_TOPIC])
    return [str(n.originator_id) for n in page]


def archived_pull_ids(audit: OfflineAudit) -> list[str]:
    return [r.originator_id for s in audit.archive.segments() for r in audit.archive.read(s)]


def test_retention_archives_old_pulls_removes_them_and_audit_queries_return_the_same_rows(audit, config):
    log = audit_log(audit)
    before = {name: all_rows(log, **f) for name, f in {
        "all": {}, "hub": {"org": "hub"}, "misses": {"result": "miss"}, "client": {"client": "10.0.0.1"},
        "window": {"since": 1_000_010.0, "until": time.time() - 3600}, "agent": {"user_agent": "podman"}}.items()}
    counts = audit.views["counters"].counts()
    AuditSeals(audit.access, audit.views["chain"], ManualClock()).seal("admin")
    ids_before = stored_pull_ids(audit)

    report = audit.archiver(batch=15).run()
    assert (report.segments, report.events) == (3, OLD)     # 15 + 15 + 10: only the old pulls
    assert stored_pull_ids(audit) == ids_before[OLD:]        # only the recent ones stay in the event store
    assert [r.id for r in audit.views["audit"].query(limit=1000)] == [r.id for r in before["all"][OLD:]]
    assert len(audit.views["chain"].links("Pulls")) == RECENT
    segments = audit.archive.segments()
    assert [(s.count, s.removed) for s in segments] == [(15, True), (15, True), (10, True)]
    assert [s.previous for s in segments[1:]] == [s.sha256 for s in segments[:-1]]
    # across the boundary, the same rows: exports, filters and pages by cursor
    assert {name: all_rows(log, **f) for name, f in {
        "all": {}, "hub": {"org": "hub"}, "misses": {"result": "miss"}, "client": {"client": "10.0.0.1"},
        "window": {"since": 1_000_010.0, "until": time.time() - 3600}, "agent": {"user_agent": "podman"}}.items()} \
        == before
    paged, cursor = [], None
    while True:
        page = log.page(AuditFilter(), cursor, limit=7)
        paged += page.rows
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert paged == before["all"]
    assert audit.views["counters"].counts() == counts     # aggregates keep the archived pulls
    # verify reads the archive, then the store; the seal made before archiving still matches
    result = verify_audit(load_settings(str(config)))
    assert result.ok, result.mismatch
    assert result.checked["Pulls"] == OLD + RECENT and result.seals_checked == 2
    assert audit.archiver(batch=15).run().segments == 0      # nothing more is due
    # a query of the last hour reads no segment at all (each records its pulls' time range)
    reads = []

    class Counting:
        def get(self, name):
            reads.append(name)
            return store.get(name)

    from application.archive_reading import SegmentArchive
    from infra.storage.archive import build_segment_store
    store = build_segment_store(load_settings(str(config)))
    counted = AuditLog(ArchivedAudit(audit.views["audit"], SegmentArchive(audit.access, Counting()),
                                     audit.pulls.mapper))
    assert all_rows(counted, since=time.time() - 3600) == before["all"][OLD:] and reads == []
    assert len(all_rows(counted, since=1_000_020.0, until=1_000_025.0)) == 5 and len(reads) == 1


def test_the_cli_lists_and_shows_segments_and_an_edited_segment_is_named_by_verify(audit, config, tmp_path):
    ran = run_in_process("audit", "archive", "run", "--config", str(config), "--batch", "25", env={})
    assert ran.returncode == 0, ran.stderr
    assert "archived 40 pull events in 2 segments" in ran.stdout
    listed = json.loads(run_in_process("audit", "archive", "list", "--config", str(config), "--json", env={}).stdout)
    assert [(s["first"], s["count"]) for s in listed] == [(1, 25), (26, 15)]
    shown = run_in_process("audit", "archive", "show", listed[1]["name"], "--config", str(config), env={})
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 15 and rows[0]["id"] == 26 and rows[0]["user_agent"] == "skopeo/1.9"
    # an auditor's check of a tampered archive object
    path = archive_file(audit, config, listed[1]["name"])
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[3] = lines[3].replace('"link": "', '"link": "0')[:-2] + '"}'
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    bad = run_in_process("audit", "verify", "--config", str(config), env={})
    assert bad.returncode == 1 and "archive" in bad.stdout and listed[1]["name"] in bad.stdout


def archive_file(audit: OfflineAudit, config: Path, name: str) -> Path:
    settings = load_settings(str(config))
    return Path(settings.data_dir).absolute() / "storage" / "archive" / name


@pytest.mark.parametrize("step", ["written", "recorded", "deleted-events"])
def test_a_sigkill_at_any_step_of_archiving_loses_and_duplicates_nothing(audit, config, step):
    original = stored_pull_ids(audit)
    command = [sys.executable, "-m", "interfaces.cli", "audit", "archive", "run", "--config", str(config),
               "--batch", "15"]
    killed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ENTREPOT_ARCHIVE_FAULT": step})
    assert killed.returncode == -9, killed.stderr           # the process really died by SIGKILL
    # In between, every pull is somewhere, and readers see each once.
    assert set(stored_pull_ids(audit)) | set(archived_pull_ids(audit)) == set(original)
    assert [r.id for r in all_rows(audit_log(audit))] == sorted({r.id for r in all_rows(audit_log(audit))})
    assert len(all_rows(audit_log(audit))) == OLD + RECENT
    restarted = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert restarted.returncode == 0, restarted.stderr
    archived, stored = archived_pull_ids(audit), stored_pull_ids(audit)
    assert sorted(archived + stored) == sorted(original)     # the union, each exactly once
    assert len(archived) == OLD and stored == original[OLD:]
    assert all(s.removed for s in audit.archive.segments())
    assert len(all_rows(audit_log(audit))) == OLD + RECENT
    audit.runners.wait_caught_up(timeout=30)                 # the Access chain takes the archive records
    assert verify_audit(load_settings(str(config))).ok
    assert not any(s.actor != "admin" for s in read_seals(audit.access))


def test_serve_archives_at_start_and_the_admin_api_answers_across_the_boundary(tmp_path):
    """SQLite: old pulls recorded before a start with retain_days are archived by the server itself."""
    import httpx

    from infra.settings import AuditSettings, Settings
    from tests.support.inprocess import InProcessServer

    settings = Settings(data_dir=str(tmp_path / "data"), admin_token="tok", organizations=(),
                        audit=AuditSettings(retain_days=30))
    keep = Settings(data_dir=settings.data_dir, admin_token="tok", organizations=())
    with InProcessServer(keep) as server:          # a server without retention records the history
        opened = OfflineAudit(keep)
        record(opened)
        opened.close()
        server.container.runners.wait_caught_up(timeout=30)
        before = httpx.get(f"{server.url}/api/v1/audit?format=jsonl", headers={"Authorization": "Bearer tok"}).text
        pulls_of_a = history_digest(server.url, "sha256:" + "a" * 64)
    assert len(pulls_of_a) == OLD
    with InProcessServer(settings) as server:
        deadline = time.monotonic() + 30
        # A round records each segment Written, then Removed once its events left the store: wait for both.
        while time.monotonic() < deadline:
            segments = server.container.archive.segments()
            if segments and all(s.removed for s in segments):
                break
            time.sleep(0.1)
        assert sum(s.count for s in segments) == OLD and all(s.removed for s in segments)
        after = httpx.get(f"{server.url}/api/v1/audit?format=jsonl", headers={"Authorization": "Bearer tok"}).text
        # The auditor's "who pulled this digest" reads the archive too: the same pulls, now all archived.
        assert history_digest(server.url, "sha256:" + "a" * 64) == pulls_of_a
    assert after == before and len(after.splitlines()) == OLD + RECENT


def history_digest(url: str, digest: str) -> list[dict]:
    import httpx

    rows, cursor = [], None
    while True:
        answer = httpx.get(f"{url}/api/v1/history/digest", headers={"Authorization": "Bearer tok"},
                           params={"digest": digest, "limit": 7, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        rows += answer.json()["items"]
        if not (cursor := answer.json()["next_cursor"]):
            return rows


def test_a_chain_view_rebuilt_after_archiving_goes_on_from_the_archive_and_verifies(audit, config, env):
    from infra.projection_runtime import rebuild

    AuditSeals(audit.access, audit.views["chain"], ManualClock()).seal("admin")
    assert audit.archiver(batch=15).run().events == OLD
    audit.runners.wait_caught_up(timeout=30)
    before = audit.views["chain"].heads()
    audit.runners.stop()
    replayed = rebuild("chain", env, page_size=7)
    assert replayed == {"Access": 1 + 1 + 3 * 2, "Pulls": RECENT}   # action, seal, 3 x (Written, Removed)
    chain = audit.views["chain"]
    assert chain.heads() == before
    assert [r.count for r in chain.links("Pulls")] == list(range(OLD + 1, OLD + RECENT + 1))
    result = verify_audit(load_settings(str(config)))
    assert result.ok, result.mismatch


def test_segments_live_in_the_s3_bucket_when_storage_is_s3(env, tmp_path, moto_s3, s3_bucket):
    config = config_for(env, tmp_path, f'[audit]\nretain_days = 30\n[storage]\nbackend = "s3"\n'
                                       f'bucket = "{s3_bucket}"\nendpoint_url = "{moto_s3.endpoint_url}"\n'
                                       f'prefix = "cache/"\n')
    runners = ProjectionRunners(env).start()
    opened = OfflineAudit(load_settings(str(config)))
    try:
        record(opened)
        runners.wait_caught_up(timeout=30)
        before = all_rows(audit_log(opened))
        assert opened.archiver(batch=25).run().events == OLD
        keys = sorted(o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
        assert keys == [f"cache/archive/{s.name}" for s in opened.archive.segments()]
        assert all_rows(audit_log(opened)) == before
        runners.wait_caught_up(timeout=30)
        assert verify_audit(load_settings(str(config))).ok
        moto_s3.client().put_object(Bucket=s3_bucket, Key=keys[0], Body=b"rewritten")
        report = verify_audit(load_settings(str(config)))
        assert not report.ok and "archive" in report.mismatch.reason
    finally:
        runners.stop()
        opened.close()


# -- Rebuilds and replays after archiving read the archive first (archived_pages.py) ----------------------------

AGGREGATES = ("counters", "analytics", "retention", "blobs")   # the views following Pulls that keep archived pulls


def archived_and_settled(audit: OfflineAudit) -> dict:
    """Archive the old pulls, let every view catch up, then stop the runners: what a rebuild must give back."""
    AuditSeals(audit.access, audit.views["chain"], ManualClock()).seal("admin")
    assert audit.archiver(batch=15).run().events == OLD
    audit.runners.wait_caught_up(timeout=30)
    audit.runners.stop()
    return {name: audit.views[name].dump() for name in (*AGGREGATES, "audit", "chain")}


def test_views_rebuilt_after_archiving_keep_the_archived_pulls_and_the_audit_view_gets_none_back(audit, config, env):
    from infra.projection_runtime import rebuild_many

    log = audit_log(audit)
    rows_before = all_rows(log)
    before = archived_and_settled(audit)
    assert len(before["audit"]["audit"]) == RECENT
    # Without the archive (the old behaviour), a rebuild loses the archived pulls: the test can fail.
    rebuild_many(("counters",), env, page_size=7)
    assert audit.views["counters"].dump() != before["counters"]

    ran = run_in_process("projections", "rebuild", "all", "--config", str(config), env={})
    assert ran.returncode == 0, ran.stderr
    after = {name: audit.views[name].dump() for name in before}
    for name in (*AGGREGATES, "audit", "chain"):
        assert after[name] == before[name], name
    assert all_rows(audit_log(audit)) == rows_before          # the audit API: the same rows, archive then view
    result = verify_audit(load_settings(str(config)))
    assert result.ok, result.mismatch


def test_a_view_emptied_by_a_schema_change_replays_the_archive_in_its_runner(audit, env):
    before = archived_and_settled(audit)
    for name in (*AGGREGATES, "audit"):
        audit.views[name].clear()   # what a schema change does to a view's rows and tracking at start
    with ProjectionRunners(env, names=(*AGGREGATES, "audit"), archive=audit.archive) as runners:
        runners.wait_caught_up(timeout=30)
    for name in (*AGGREGATES, "audit"):
        assert audit.views[name].dump() == before[name], name


def test_replay_until_an_instant_before_archiving_is_unchanged_by_archiving(audit, config, tmp_path):
    import sqlite3
    from contextlib import closing

    audit.runners.wait_caught_up(timeout=30)
    instant = time.time()
    time.sleep(0.05)   # the archive records (and seal) come after the instant

    def replayed(out: Path) -> dict:
        ran = run_in_process("replay", "--until", str(instant), "--out", str(out), "--config", str(config), env={})
        assert ran.returncode == 0, ran.stderr
        with closing(sqlite3.connect(out)) as db:
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name != 'replay_info' ORDER BY name")]
            return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}

    first = replayed(tmp_path / "before.db")
    assert len(first["audit"]) == OLD + RECENT and len(first["chain_links"]) > OLD + RECENT
    archived_and_settled(audit)
    assert replayed(tmp_path / "after.db") == first


# Blue/green schema upgrades are PostgreSQL's (SQLite's is the runner test above): PostgreSQL only.
@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_a_postgres_copy_with_an_older_schema_is_rebuilt_blue_green_with_the_archived_pulls(audit, env):
    from contextlib import closing

    from infra.projection_runtime import locks
    from infra.projection_runtime.locked import LockedRunners
    from projections import versions

    before = archived_and_settled(audit)
    schema = locks.schema_of(env)
    with closing(locks.connect(env)) as conn, conn.transaction():
        live = versions.live_versions(conn.cursor(), schema)["counters"]
        versions.record_schema(conn.cursor(), schema, "counters", live, 0)   # as if made by an older release
    runners = LockedRunners(env, names=("counters",), archive=audit.archive).start()
    try:
        runners.wait_caught_up(timeout=30)
        with closing(locks.connect(env)) as conn:
            assert versions.live_versions(conn.cursor(), schema)["counters"] == live + 1   # it was rebuilt
        assert audit.views["counters"].dump() == before["counters"]
    finally:
        runners.stop()


def test_a_rebuild_between_a_segments_record_and_its_removal_counts_each_pull_once(audit, env):
    from infra.projection_runtime import rebuild_many

    class Stop(Exception):
        pass

    def stop_at(step: str) -> None:
        if step == "recorded":
            raise Stop(step)   # a crash after ArchiveSegment.Written, before the rows are deleted

    audit.runners.wait_caught_up(timeout=30)
    audit.runners.stop()
    before = {name: audit.views[name].dump() for name in AGGREGATES}
    with pytest.raises(Stop):
        audit.archiver(batch=15, step=stop_at).run()
    assert audit.archive.last() == 15 and len(stored_pull_ids(audit)) == OLD + RECENT   # in both places
    rebuild_many(AGGREGATES, env, page_size=7, archive=audit.archive)
    assert {name: audit.views[name].dump() for name in AGGREGATES} == before


def test_an_emptied_chain_views_pulls_worker_waits_for_the_archive_seed_before_it_chains_stored_pulls(audit, config,
                                                                                                      env):
    from infra.projection_runtime import open_view
    from infra.projection_runtime.workers import ProjectionWorker
    from application.access import Access
    from application.pulls import Pulls

    assert audit.archiver(batch=15).run().events == OLD
    audit.runners.wait_caught_up(timeout=30)
    before = audit.views["chain"].heads()
    audit.runners.stop()
    audit.views["chain"].clear()
    pulls_view, access_view = open_view("chain", env), open_view("chain", env)
    pulls_worker = ProjectionWorker("chain", pulls_view, Pulls, env, archive=audit.archive).start()
    try:
        time.sleep(1.0)   # its Access worker has not run: the seed is unknown, so no stored pull is chained
        assert pulls_view.head("Pulls").position == 0 and pulls_worker.state == "running"
        access_worker = ProjectionWorker("chain", access_view, Access, env, archive=audit.archive).start()
        try:
            deadline = time.monotonic() + 30
            while pulls_view.heads() != before and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            access_worker.stop()
    finally:
        pulls_worker.stop()
        pulls_view.close()
        access_view.close()
    assert audit.views["chain"].heads() == before
    result = verify_audit(load_settings(str(config)))
    assert result.ok, result.mismatch
