"""The applications on both event stores, wired from Settings: CacheRecords, Pulls, group commit, Credentials."""

from __future__ import annotations

import asyncio
import secrets

import psycopg
import pytest
from psycopg import sql
from eventsourcing.persistence import MapperDeserialisationError

from application.credentials import Credentials, UpstreamCredentials
from application.orgs import OrgDirectory
from application.pulls import GroupCommit, Pulls
from application.cache_records import CacheRecords
from domain.pull import Pull
from infra.persistence import event_store_env
from infra.settings import DatabaseSettings, Settings
from infra.projection_runtime import open_view, projection_runners

pytestmark = pytest.mark.integration

ORG, REPO = "hub", "library/alpine"
M1 = "sha256:" + "1" * 64


@pytest.fixture
def settings(request, event_store_backend, tmp_path) -> Settings:
    """Settings for a fresh event store: embedded SQLite, or a fresh schema in this module's PostgreSQL database."""
    database = DatabaseSettings()
    if event_store_backend == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"s_{secrets.token_hex(3)}")
    return Settings(data_dir=str(tmp_path / "data"), database=database)


@pytest.fixture
def env(settings):
    return event_store_env(settings)


@pytest.fixture
def apps(env):
    records, pulls, credentials = CacheRecords(env=env), Pulls(env=env), Credentials(env=env)
    yield records, pulls, credentials
    for app in (records, pulls, credentials):
        app.close()


def pull(at: float, result: str = "hit") -> Pull:
    return Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result=result, client="10.0.0.9",
                user_agent="containerd/2.0", at=at)


def test_orgs_are_applied_once_and_reconfigured_only_on_change(apps):
    records, _, credentials = apps
    orgs = OrgDirectory(records, credentials, ttl=0)
    assert orgs.apply(ORG, {"upstream": "docker.io", "staleness_seconds": 60})
    assert not orgs.apply(ORG, {"upstream": "docker.io", "staleness_seconds": 60})
    assert orgs.apply(ORG, {"upstream": "docker.io", "staleness_seconds": 120})
    assert orgs.get(ORG).staleness_seconds == 120
    assert records.delete_org(ORG) and orgs.get(ORG) is None


def test_a_tag_resolved_twice_concurrently_keeps_one_history(apps, env):
    records, _, _ = apps
    other = CacheRecords(env=env)   # a second writer, as a second replica would be
    try:
        records.record_tag(ORG, REPO, "3.20", M1, "application/vnd.oci.image.manifest.v1+json", 1.0)
        other.record_tag(ORG, REPO, "3.20", "sha256:" + "2" * 64, "application/vnd.oci.image.manifest.v1+json", 2.0)
        records.record_tag(ORG, REPO, "3.20", "sha256:" + "3" * 64, "application/vnd.oci.image.manifest.v1+json", 3.0)
    finally:
        other.close()
    events = records.recorder.select_notifications(start=1, limit=10)
    assert len(events) == 3 and [n.originator_version for n in events] == [1, 2, 3]


def test_upstream_passwords_are_stored_encrypted_and_need_the_key(apps, env):
    _, _, credentials = apps
    credentials.set(ORG, "alice", "pa55-w0rd-secret")
    assert credentials.get(ORG) == ("alice", "pa55-w0rd-secret")
    stored = credentials.recorder.select_events(UpstreamCredentials.create_id(ORG))
    assert stored and all(b"pa55-w0rd-secret" not in s.state and b"alice" not in s.state for s in stored)
    wrong = Credentials(env={**env, "CREDENTIALS_CIPHER_KEY": "A" * 43 + "="})
    try:
        with pytest.raises(MapperDeserialisationError):
            wrong.get(ORG)
    finally:
        wrong.close()


def test_concurrent_pulls_through_group_commit_are_each_recorded_once(apps, env):
    _, pulls, _ = apps

    async def serve(n: int) -> None:
        group_commit = GroupCommit(pulls)
        await group_commit.start()
        try:
            await asyncio.gather(*(group_commit.record(pull(float(i))) for i in range(n)))
        finally:
            await group_commit.stop()

    asyncio.run(serve(300))
    notifications = pulls.recorder.select_notifications(start=1, limit=1000)
    assert len(notifications) == 300
    with projection_runners(env) as runners:
        runners.wait_caught_up(timeout=30)
    audit = open_view("audit", env)
    try:
        rows = audit.query(limit=1000)
    finally:
        audit.close()
    assert sorted(r.at for r in rows) == [float(i) for i in range(300)]
    assert len({r.id for r in rows}) == 300


def test_postgres_tables_are_named_after_the_pinned_application_names(postgres_url, tmp_path):
    database = DatabaseSettings(url=postgres_url, schema="pinned")
    env = event_store_env(Settings(data_dir=str(tmp_path / "data"), database=database))
    apps = CacheRecords(env=env), Pulls(env=env), Credentials(env=env)
    try:
        apps[0].apply_org(ORG, {"upstream": "docker.io"})
        apps[1].record(pull(1.0))
        apps[2].set(ORG, "alice", "secret")
        # Never the plpgsql insert function (eventsourcing creates it anyway): it skips the table lock (P5).
        assert not any(app.recorder.datastore.enable_db_functions for app in apps)
    finally:
        for app in apps:
            app.close()
    with psycopg.connect(postgres_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'pinned'")}
    assert {"registry_events", "pulls_events", "credentials_events"} <= tables


def test_a_missing_database_and_schema_are_created(postgres_url, tmp_path):
    missing = postgres_url + "_new"   # the URL ends with the module's database name
    env = event_store_env(Settings(data_dir=str(tmp_path / "data"), database=DatabaseSettings(url=missing)))
    try:
        records = CacheRecords(env=env)
        records.apply_org(ORG, {"upstream": "docker.io"})
        records.close()
        assert env["POSTGRES_SCHEMA"] == "entrepot" and env["POSTGRES_DBNAME"].endswith("_new")
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(env["POSTGRES_DBNAME"])))
