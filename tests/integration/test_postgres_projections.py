"""PostgreSQL projections across processes: one runner each, takeover, `projections run`, blue/green rebuild."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from application.pulls import Pulls
from application.cache_records import CacheRecords
from domain.pull import Pull
from infra.projection_runtime import (LockedRunners, RebuildInProgress, locks, open_tags_and_manifests, open_view, rebuild,
                                     status, wait_caught_up)
from projections import PROJECTION_NAMES
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration

ORG, REPO = "hub", "library/alpine"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
M1, M2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
LAYERS = [f"sha256:{i:064x}" for i in range(1, 4)]


@pytest.fixture
def env(postgres_env_factory):
    return postgres_env_factory("main")


@pytest.fixture
def apps(env):
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    yield records, pulls
    records.close()
    pulls.close()


def pull(pulls: Pulls, at: float, digest: str = M1) -> None:
    pulls.record(Pull(org=ORG, repository=REPO, reference="3.20", digest=digest, result="hit", client="10.0.0.1",
                      user_agent="podman/4.3", at=at))


def populate(records: CacheRecords) -> None:
    records.apply_org(ORG, {"upstream": "docker.io"})
    records.record_manifest(ORG, REPO, M1, IMAGE, 900, LAYERS, [], 1.0)
    for layer in LAYERS:
        records.record_blob(ORG, REPO, layer, 10, 2.0)
    records.record_tag(ORG, REPO, "3.20", M1, IMAGE, 3.0)


def counts(env) -> dict:
    view = open_view("counters", env)
    try:
        return view.counts()
    finally:
        view.close()


def until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def tables(env) -> set[str]:
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         dbname=env["POSTGRES_DBNAME"]) as conn:
        return {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                               (env["POSTGRES_SCHEMA"],))}


def test_only_one_process_runs_each_projection_and_another_takes_over(env, apps):
    records, pulls = apps
    populate(records)
    first = LockedRunners(env, interval=0.2).start()
    second = LockedRunners(env, interval=0.2).start()   # another replica: its own session, so its own locks
    try:
        every = {"tags", "manifests", "blobs", "audit", "counters", "orgs", "referrers", "analytics", "retention",
                 "history", "chain"}
        assert set(first.running) == every
        assert second.running == {} and second.status() == []
        assert {s.state for s in status(env)} == {"running"}
        for i in range(5):
            pull(pulls, float(i))
        wait_caught_up(env, timeout=15)
        first.stop()                                     # the replica goes away: its session's locks go with it
        until(lambda: set(second.running) == every)     # all of them (counters among them) before pulling on
        for i in range(5, 8):
            pull(pulls, float(i))
        second.wait_caught_up(timeout=15)
        assert counts(env) == {ORG: {"hit": 8}}          # resumed from tracking: nothing twice, nothing lost
        assert not first.errors and not second.errors
    finally:
        first.stop()
        second.stop()
    assert {s.state for s in status(env)} == {"stopped"}


def test_projections_run_serves_until_sigterm(env, apps, tmp_path):
    records, pulls = apps
    config = tmp_path / "entrepot.toml"
    url = f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      f'[database]\nurl = "{url}"\nschema = "{env["POSTGRES_SCHEMA"]}"\n')
    process = subprocess.Popen([sys.executable, "-m", "interfaces.cli", "projections", "run", "--config", str(config)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in process.stdout:
            if line.startswith("running projections:"):
                break
        assert "counters" in line and "tags" in line
        populate(records)
        pull(pulls, 1.0)
        wait_caught_up(env, timeout=15)
        assert counts(env) == {ORG: {"hit": 1}}
        assert {s.state for s in status(env)} == {"running"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert {s.state for s in status(env)} == {"stopped"}


def test_a_rebuild_while_serving_switches_readers_without_a_gap(env, apps):
    records, pulls = apps
    populate(records)
    recorded = 0
    for i in range(50):
        pull(pulls, float(i))
        recorded += 1
    runners = LockedRunners(env, interval=0.2).start()
    cache = open_tags_and_manifests(env)
    counters = open_view("counters", env)          # a long-lived reader, as the admin API keeps one
    seen, errors, stop = [], [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append((cache.get_tag(ORG, REPO, "3.20"), cache.get_manifest(ORG, REPO, M1),
                             counters.counts(ORG).get(ORG, {}).get("hit", 0)))
            except Exception as error:  # noqa: BLE001 - asserted below
                errors.append(error)

    reader = threading.Thread(target=read)
    try:
        runners.wait_caught_up(timeout=15)
        reader.start()
        for name in ("tags", "manifests", "counters"):
            pull(pulls, 100.0)                         # recorded while the new copies are built
            recorded += 1
            assert rebuild(name, env, page_size=7)
        records.record_tag(ORG, REPO, "3.20", M2, IMAGE, 4.0)   # retargeted after the switch
        until(lambda: {name: runners.running.get(name) for name in ("tags", "manifests", "counters")}
              == {"tags": 2, "manifests": 2, "counters": 2})     # the runners followed each switch
        runners.wait_caught_up(timeout=15)
        until(lambda: cache.get_tag(ORG, REPO, "3.20").digest == M2)
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        cache.close()
        counters.close()
        runners.stop()
    assert errors == []
    assert all(tag is not None and manifest is not None for tag, manifest, _ in seen)
    hits = [n for _, _, n in seen]
    assert hits == sorted(hits) and hits[-1] <= recorded           # never went back, never counted twice
    assert counts(env) == {ORG: {"hit": recorded}}
    left = tables(env)
    assert {"tags_v2", "manifests_v2", "counters_v2", "audit_v1"} <= left
    assert not {"tags_v1", "manifests_v1", "counters_v1", "tags_v1_tracking"} & left   # the old copies are gone


def test_a_crashed_projection_is_restarted_from_its_position_after_a_delay(env, apps):
    records, pulls = apps
    populate(records)
    runners = LockedRunners(env, interval=0.1, restart_delay=0.5).start()
    try:
        pull(pulls, 1.0)
        runners.wait_caught_up(timeout=15)
        with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                             dbname=env["POSTGRES_DBNAME"], autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{env["POSTGRES_SCHEMA"]}".counters_v1 CASCADE')
        pull(pulls, 2.0)                                     # cannot be counted: the counters runner crashes
        until(lambda: any(s.state == "crashed" for s in runners.status()))
        open_view("counters", env).close()                   # an operator repairs the view (tables recreated)
        until(lambda: not any(s.state == "crashed" for s in runners.status())
              and "counters" in runners.running)
        runners.wait_caught_up(timeout=15)
        assert ("counters", "Pulls") in runners.errors       # still on record after the restart
    finally:
        runners.stop()
    assert counts(env) == {ORG: {"hit": 1}}                  # the second pull, counted once into the new table


def test_a_runner_that_loses_its_session_stops_and_takes_over_again(env, apps):
    records, pulls = apps
    populate(records)
    runners = LockedRunners(env, interval=0.1).start()
    try:
        before = locks_held(env)
        assert set(before) == set(runners.running) and len(set(before.values())) == 1   # one session holds them all
        with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                             dbname=env["POSTGRES_DBNAME"], autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (next(iter(before.values())),))
        until(lambda: set(locks_held(env).values()) - set(before.values())
              and len(locks_held(env)) == len(PROJECTION_NAMES))
        for i in range(3):
            pull(pulls, float(i))
        until(lambda: len(runners.running) == len(PROJECTION_NAMES))
        runners.wait_caught_up(timeout=15)
    finally:
        runners.stop()
    assert counts(env) == {ORG: {"hit": 3}}


def locks_held(env) -> dict[str, int]:
    return locks.holders(env, PROJECTION_NAMES)


def test_a_second_rebuild_at_once_is_refused_and_a_failed_one_leaves_nothing_behind(env, apps):
    records, _ = apps
    populate(records)
    schema = env["POSTGRES_SCHEMA"]
    open_view("tags", env).close()
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         dbname=env["POSTGRES_DBNAME"], autocommit=True) as other:
        # What a rebuild killed half-way leaves: the next version's tables, partly filled.
        other.execute(f'CREATE TABLE "{schema}".tags_v2 AS SELECT * FROM "{schema}".tags_v1 WHERE false')
        other.execute(f'INSERT INTO "{schema}".tags_v2 VALUES (\'x\', \'y\', \'z\', \'d\', \'m\', 0)')
        other.execute("SELECT pg_advisory_lock(%s)", (locks.advisory_key(schema, "tags", "rebuild"),))
        with pytest.raises(RebuildInProgress):
            rebuild("tags", env)                             # the other session is rebuilding tags
    assert rebuild("tags", env) == {"Registry": 1}            # its session ended: the lock went with it
    view = open_view("tags", env)
    try:
        assert view.list_tags("x", "y") == [] and view.list_tags(ORG, REPO) == ["3.20"]
        assert view.version == 2
    finally:
        view.close()
