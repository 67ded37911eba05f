"""The views' PostgreSQL connections: a terminated backend costs no failed read, a blocked database fails fast."""

from __future__ import annotations

import time

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from application.pulls import Pulls
from application.cache_records import CacheRecords
from domain.pull import Pull
from infra.projection_runtime import ProjectionRunners, open_tags_and_manifests, open_view, rebuild
from projections import PROJECTION_NAMES

pytestmark = pytest.mark.integration

ORG, REPO = "hub", "library/alpine"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
M1 = "sha256:" + "1" * 64
LAYER = "sha256:" + "a" * 64


@pytest.fixture
def env(postgres_env_factory):
    env = postgres_env_factory("main")
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        records.apply_org(ORG, {"upstream": "docker.io"})
        records.record_manifest(ORG, REPO, M1, IMAGE, 900, [LAYER], [], 1.0)
        records.record_blob(ORG, REPO, LAYER, 10, 2.0)
        records.record_tag(ORG, REPO, "3.20", M1, IMAGE, 3.0)
        pulls.record(Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="hit", client="10.0.0.1",
                          user_agent="podman/4.3", at=5.0))
    finally:
        records.close()
        pulls.close()
    for name in PROJECTION_NAMES:
        rebuild(name, env)
    return env


def _admin(env) -> psycopg.Connection:
    return psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                           dbname=env["POSTGRES_DBNAME"], autocommit=True)


def _terminate_every_other_backend(env) -> int:
    with _admin(env) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall())


def _reads(cache, tags, counters, audit) -> tuple:
    return (cache.get_tag(ORG, REPO, "3.20").digest, cache.get_manifest(ORG, REPO, M1).blobs,
            cache.list_tags(ORG, REPO), tags.get_tag(ORG, REPO, "3.20").digest, counters.counts(ORG),
            len(audit.query(org=ORG)))


def test_reads_after_the_views_backends_were_terminated_succeed(env):
    cache, tags, counters, audit = (open_tags_and_manifests(env), open_view("tags", env), open_view("counters", env),
                                    open_view("audit", env))
    try:
        before = _reads(cache, tags, counters, audit)   # the pool now holds open connections
        assert before == (M1, [LAYER], ["3.20"], M1, {ORG: {"hit": 1}}, 1)
        assert _terminate_every_other_backend(env) >= 1
        assert _reads(cache, tags, counters, audit) == before
        assert _terminate_every_other_backend(env) >= 1
        assert _reads(cache, tags, counters, audit) == before
    finally:
        for view in (cache, tags, counters, audit):
            view.close()


def test_a_worker_whose_backend_was_terminated_is_restarted_and_catches_up(env):
    runners = ProjectionRunners(env, ("counters",)).start()
    try:
        runners.wait_caught_up(timeout=10)
        _terminate_every_other_backend(env)
        pulls = Pulls(env=env)
        try:
            pulls.record(Pull(org=ORG, repository=REPO, reference="3.20", digest=M1, result="hit",
                              client="10.0.0.1", user_agent="podman/4.3", at=6.0))
        finally:
            pulls.close()
        # A poll on a dead connection is retried on a fresh one: the worker does not crash.
        runners.wait_caught_up(timeout=10)
        assert runners.errors == {}
    finally:
        runners.stop()
    view = open_view("counters", env)
    try:
        assert view.counts(ORG) == {ORG: {"hit": 2}}
    finally:
        view.close()


def test_a_read_on_a_blocked_view_fails_within_the_statement_timeout(env):
    env = {**env, "VIEWS_STATEMENT_TIMEOUT": "0.5"}
    tags = open_view("tags", env)
    try:
        with _admin(env) as blocker, blocker.transaction():
            blocker.execute(f'LOCK TABLE "{env["POSTGRES_SCHEMA"]}".tags_v{tags.version} IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(OperationalError, match="statement timeout"):
                tags.get_tag(ORG, REPO, "3.20")
            assert time.monotonic() - started < 3
        assert tags.get_tag(ORG, REPO, "3.20").digest == M1    # and it reads again once the lock is gone
    finally:
        tags.close()
