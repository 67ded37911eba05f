"""The bulk rebuild (rebuild.REBUILD_BULK_EVENTS): gathered pages and indexes made at the end give the live
runners' views exactly, on SQLite and PostgreSQL; a rebuild SIGKILLed midway leaves views that recover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from application.cache_records import CacheRecords
from application.pulls import Pulls
from domain.pull import Pull
from infra.projection_runtime import open_view, projection_runners, status
from infra.projection_runtime.opening import is_postgres
from infra.projection_runtime.rebuild import rebuild_many
from projections import versions
from tests.support.views import view_dumps

pytestmark = pytest.mark.integration

ORG = "hub"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
# The views that gather (audit, counters, blobs, retention, analytics) and one that writes page by page (chain).
VIEWS = ("audit", "counters", "blobs", "retention", "analytics", "chain")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(env_factory):
    return env_factory("main")


def digest(n: int, part: int = 0) -> str:
    return f"sha256:{n:032x}{part:032x}"


def write_history(env: dict, pulls_count: int = 120) -> None:
    """Three images, cached between pulls (some pulls come before their manifest), pulls of two generations."""
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        records.apply_org(ORG, {"upstream": "docker.io"})
        for n in range(pulls_count):
            image = n % 3
            if n == 9 * (image + 1) + image:   # cached after its first pulls (n % 3 == image: its own pull)
                layers = [digest(image, 1), digest(image, 2)]
                records.record_manifest(ORG, f"library/i{image}", digest(image), IMAGE, 900, layers, [], 5.0 + n,
                                        tag="latest", sizes={layer: 100 for layer in layers})
                for layer in layers:
                    records.record_blob(ORG, f"library/i{image}", layer, 100, 6.0 + n)
            pulls.write([Pull.recorded(ORG, f"library/i{image}", "latest", digest(image),
                                       ("hit", "miss", "stale", "error")[n % 4], f"10.0.0.{n % 5}", "containerd/2.0",
                                       100.0 + n * 7, actor="anonymous")])
    finally:
        records.close()
        pulls.close()


def dumps(env: dict, names: tuple[str, ...] = VIEWS) -> dict:
    return view_dumps(env, names)


def index_names(env: dict) -> dict[str, list[str]]:
    """Each view's secondary indexes, as its live copy has them (without the version in the name)."""
    out = {}
    for name in VIEWS:
        view = open_view(name, env)
        try:
            if is_postgres(env):
                with view.datastore.transaction(commit=False) as c:
                    c.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexname = ANY(%s)",
                              (view.datastore.schema, [versions.table(i, view.version) for i in view.indexes]))
                    found = [row["indexname"].replace(f"_v{view.version}", "") for row in c.fetchall()]
            else:
                with view.datastore.transaction(commit=False) as c:
                    c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
                    found = [row[0] for row in c.fetchall()]
            out[name] = sorted(found)
        finally:
            view.close()
    return out


def built_live(env: dict, names: tuple[str, ...] = VIEWS) -> dict:
    runners = projection_runners(env).start()
    try:
        runners.wait_caught_up(timeout=20)
    finally:
        runners.stop()
    return dumps(env, names)


def test_a_bulk_rebuild_writes_what_the_live_runners_wrote_and_makes_every_index_again(env):
    write_history(env)
    live = built_live(env)
    indexes = index_names(env)
    assert indexes["audit"] and indexes["retention"] and live["audit"]["audit"]
    # Pages of 7 gathered by 20: flushes fall inside pages of both logs, and Registry pages interleave
    # retention's gathered pulls with events it writes page by page.
    replayed = rebuild_many(VIEWS, env, page_size=7, bulk_events=20)
    assert replayed["audit"] == {"Pulls": 120}
    assert dumps(env) == live
    assert index_names(env) == indexes
    assert all(s.lag == 0 for s in status(env) if s.projection in VIEWS)
    # Page by page, as before the bulk mode: the same again.
    rebuild_many(VIEWS, env, page_size=7, bulk_events=0)
    assert dumps(env) == live


KILLED_REBUILD = """
import json, os, signal, sys
from infra.projection_runtime import bulk
from infra.projection_runtime.rebuild import rebuild_many

writes = 0
write = bulk.Gathering.write

def write_then_die(self, *args, **kwargs):
    global writes
    write(self, *args, **kwargs)
    writes += 1
    if writes == 6:   # some views' gatherings are written, others are not: killed mid-rebuild
        os.kill(os.getpid(), signal.SIGKILL)

bulk.Gathering.write = write_then_die
rebuild_many(tuple(sys.argv[1].split(",")), json.loads(os.environ["REBUILD_ENV"]), page_size=7, bulk_events=20)
"""


def test_a_bulk_rebuild_killed_midway_leaves_views_that_recover_exactly_once(env):
    write_history(env)
    live = built_live(env)
    indexes = index_names(env)
    done = subprocess.run([sys.executable, "-c", KILLED_REBUILD, ",".join(VIEWS)], cwd=ROOT, timeout=120,
                          env={**os.environ, "REBUILD_ENV": json.dumps(env)})
    assert done.returncode == -signal.SIGKILL
    if is_postgres(env):
        # The copy being built was never live: readers and runners still have the whole live copy, and
        # the next rebuild starts that copy over.
        assert dumps(env) == live
        rebuild_many(VIEWS, env, page_size=7, bulk_events=20)
    else:
        # In place: each view holds what it wrote with its tracking; opening it makes the dropped indexes
        # again, and the runners go on from its position.
        partial = dumps(env)
        assert partial != live
        assert built_live(env) == live
    assert dumps(env) == live
    assert index_names(env) == indexes


def write_traffic_history(env: dict) -> None:
    """write_history, then what only the analytics view adds up: traffic reports, evictions counted for the
    org's generation at their point of Registry's log (one before the org is deleted and made again, one
    after), and pulls and reports of the org's second generation."""
    from domain.traffic import TrafficReport

    write_history(env, pulls_count=90)
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        def report(at: float, generation: int, repository: str) -> list:
            return TrafficReport(org=ORG, process="test:1", since=at - 5, until=at, bytes_served={"blob": 300},
                                 bytes_fetched={"blob": 100}, blob_pulls={"hit": 2, "miss": 1}, fills=1,
                                 fill_seconds=[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], fills_failed=0,
                                 repositories={repository: 300}, generation=generation).collect_events()

        def evict(image: int, at: float) -> None:
            assert records.evict_image(ORG, f"library/i{image}", digest(image), children=[], tags=["latest"],
                                       bytes=900, reason="quota", policy="lru", actor="system:evictor", at=at)

        def cache(image: int, at: float) -> None:
            layers = [digest(image, 1)]
            records.record_manifest(ORG, f"library/i{image}", digest(image), IMAGE, 500, layers, [], at,
                                    tag="latest", sizes={layer: 100 for layer in layers})

        cache(5, 50.0)
        pulls.write([event for at in (400.0, 700.0, 4000.0) for event in report(at, 1, "library/i0")])
        evict(5, 800.0)
        records.delete_org(ORG)
        records.apply_org(ORG, {"upstream": "docker.io"})
        cache(7, 900.0)
        pulls.write([Pull.recorded(ORG, f"library/i{n % 2 + 6}", "latest", digest(n % 2 + 6), "hit",
                                   f"10.0.1.{n % 3}", "containerd/2.0", 1000.0 + n * 61, generation=2)
                     for n in range(40)])
        pulls.write(report(1500.0, 2, "library/i7"))
        evict(7, 1600.0)
    finally:
        records.close()
        pulls.close()


def test_the_analytics_view_rebuilt_in_bulk_is_the_one_built_live(env):
    write_traffic_history(env)
    live = built_live(env)
    indexes = index_names(env)
    assert indexes["analytics"]
    traffic = live["analytics"]["analytics_traffic"]
    # Both generations' evictions are counted (the column after fills_failed), each in its own generation.
    assert {row[1] for row in traffic if row[-1]} == {1, 2}
    assert {row[1] for row in live["analytics"]["analytics_member_sets"]} == {1, 2}
    # Pages of 7 gathered by 20: gatherings hold pulls and reports of both generations, and Registry's
    # evictions with and without their org's registration in the same gathering.
    rebuild_many(("analytics",), env, page_size=7, bulk_events=20)
    assert dumps(env)["analytics"] == live["analytics"]
    assert index_names(env) == indexes
    for page_size, bulk_events in ((3, 0), (1000, 100_000)):
        rebuild_many(("analytics",), env, page_size=page_size, bulk_events=bulk_events)
        assert dumps(env)["analytics"] == live["analytics"]


# PostgreSQL only: its views' many-row statements go through a COPY stage from STAGED_ROWS rows on.
@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_views_written_through_copy_stages_are_the_ones_written_from_arrays(env, monkeypatch):
    from projections import postgres_rows

    write_traffic_history(env)
    live = built_live(env)   # arrays: the live pages' statements are below STAGED_ROWS
    staged: set[tuple[str, ...]] = set()
    row_source = postgres_rows.row_source

    @contextmanager
    def noting(c, types, rows):
        with row_source(c, types, rows) as (source, params):
            if source.startswith("pg_temp."):
                staged.add(tuple(types))
            yield source, params

    monkeypatch.setattr(postgres_rows, "STAGED_ROWS", 1)
    monkeypatch.setattr("projections.postgres_view.row_source", noting)
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20)
    assert dumps(env) == live
    # The many-row upserts of the gathering views took the stage: analytics' member sets, blobs' pulls,
    # retention's pulls among them.
    assert {("text", "bigint", "bigint", "bigint", "bytea", "bytea"), ("text", "text", "double precision", "bigint"),
            ("text", "text", "text", "double precision", "bigint", "double precision", "bigint")} <= staged
    assert len(staged) >= 10


# PostgreSQL's idle_in_transaction_session_timeout: PostgreSQL only.
@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_a_gathering_written_slowly_is_not_ended_as_idle_in_its_transaction(env, monkeypatch):
    # On a loaded machine a gathering's Python work between its statements can outlast the views' pool limit
    # on sessions idle in a transaction (a 1M rebuild failed so at load 10): a bulk rebuild's writes lift it.
    import time

    from projections.counters import PostgresCountersView

    write_history(env, pulls_count=30)
    live = built_live(env)
    write = PostgresCountersView.write_gathered

    def slowly(self, c, gathered):
        time.sleep(1.5)   # the writer's thread waiting for the GIL, longer than the limit below
        write(self, c, gathered)

    monkeypatch.setattr(PostgresCountersView, "write_gathered", slowly)
    slow_env = {**env, "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "1"}
    rebuild_many(("counters",), slow_env, page_size=7, bulk_events=20, child_events=None)
    assert dumps(env)["counters"] == live["counters"]


def test_the_chain_links_a_gathering_of_pages_at_once_in_a_bulk_rebuild(env, monkeypatch):
    from projections.chain import ChainView

    write_history(env)
    live = built_live(env)
    written = []   # the batches the chain linked, one transaction each
    process_page = ChainView.process_page

    def counted(self, c, batch):
        written.append(len(batch))
        process_page(self, c, batch)

    monkeypatch.setattr(ChainView, "process_page", counted)
    rebuild_many(("chain",), env, page_size=7, bulk_events=20)
    assert dumps(env)["chain"] == live["chain"]
    # 120 pulls in pages of 7, gathered 21 at a time (three pages): 6 gatherings, not 18 pages.
    assert written == [21] * 5 + [15]


@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_postgres_copies_keep_room_for_updated_rows_and_compare_audit_keys_as_bytes(env):
    """A rebuilt copy's tables of pull stats keep a third of each page free (UPDATED_IN_PLACE: updates stay on their
    page), and the audit columns its indexes sort are "C": their rows and answers are the same as before."""
    write_history(env, 30)
    live = built_live(env)
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20)
    assert dumps(env) == live
    options, collations = {}, {}
    for name, tables in (("blobs", ("blobs", "manifest_refs", "blob_totals")), ("retention", ("images", "members")),
                         ("audit", ("audit",))):
        view = open_view(name, env)
        try:
            with view.datastore.transaction(commit=False) as c:
                for table in tables:
                    c.execute("SELECT reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = %s AND c.relname = %s", (view.datastore.schema, versions.table(table, view.version)))
                    options[table] = c.fetchone()["reloptions"]
                if name == "audit":
                    c.execute("SELECT column_name, collation_name FROM information_schema.columns "
                              "WHERE table_schema = %s AND table_name = %s",
                              (view.datastore.schema, versions.table("audit", view.version)))
                    collations = {row["column_name"]: row["collation_name"] for row in c.fetchall()}
        finally:
            view.close()
    assert options == {"blobs": ["fillfactor=70"], "manifest_refs": ["fillfactor=70"], "images": ["fillfactor=70"],
                       "blob_totals": None, "members": None, "audit": None}
    assert {column for column, collation in collations.items() if collation == "C"} == {
        "org", "repository", "digest", "result", "client", "actor", "user_agent"}
