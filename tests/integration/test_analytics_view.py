"""The analytics view on SQLite and PostgreSQL: rollups per bucket, exact distinct counts, top lists,
exactly-once pages, and the same rows after a replay."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from application.admin import InvalidRequest
from application.analytics import FIGURES, Analytics
from application.errors import OrgUnknown
from domain.analytics import DAY, HOUR
from domain.pull import Pull
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport, fill_bucket
from infra.projection_runtime import open_view

pytestmark = pytest.mark.integration
T0 = 1_764_460_800          # 2025-11-30T00:00:00Z, a day boundary


@pytest.fixture
def view(env_factory):
    opened = open_view("analytics", env_factory("main"))   # minute buckets kept forever (env_factory)
    yield opened
    opened.close()


def pull(result, at, client="10.0.0.1", repository="library/alpine", reference="3.19", org="hub"):
    return Pull(org=org, repository=repository, reference=reference, digest="" if result == "error" else "sha256:x",
                result=result, client=client, user_agent="skopeo", at=at)


def report(at, served=0, fetched=0, fills=(), org="hub", repositories=None):
    counts = [0] * (len(FILL_SECONDS_BUCKETS) + 1)
    for seconds in fills:
        counts[fill_bucket(seconds)] += 1
    return TrafficReport(org=org, process="test:1", since=at - 5, until=at, bytes_served={"blob": served},
                         bytes_fetched={"blob": fetched}, blob_pulls={"hit": 1}, fills=len(fills),
                         fill_seconds=counts, fills_failed=0, repositories=repositories or {})


def workload():
    aggregates = [
        pull("miss", T0 + 10), pull("hit", T0 + 70, client="10.0.0.2"), pull("hit", T0 + HOUR + 5),
        pull("stale", T0 + 2 * HOUR), pull("denied", T0 + 2 * HOUR + 1, client="10.0.0.3"),
        pull("hit", T0 + DAY + 30, repository="library/nginx", reference="1.27"),
        pull("hit", T0 + 100, org="quay", repository="coreos/etcd"),
        report(T0 + 15, served=1000, fetched=1000, fills=(0.2,), repositories={"library/alpine": 1000}),
        report(T0 + HOUR + 10, served=1000, repositories={"library/alpine": 1000}),
        report(T0 + DAY + 40, served=400, fetched=300, fills=(3.0,), repositories={"library/nginx": 400}),
    ]
    return [event for aggregate in aggregates for event in aggregate.collect_events()]


def tracked(events, start=1):
    return [(event, Tracking("Pulls", start + i)) for i, event in enumerate(events)]


def analytics(view, now=T0 + 2 * DAY):
    return Analytics(view, lambda: ["hub", "quay", "idle"], lambda: now)


def test_a_summary_adds_up_pulls_bytes_clients_and_fill_latency_over_any_range(view):
    view.process(tracked(workload()))
    whole = analytics(view).summary("hub", since=T0, until=T0 + 2 * DAY)
    assert whole["pulls"] == {"hit": 3, "miss": 1, "stale": 1, "revalidated": 0, "error": 0, "denied": 1}
    assert whole["hit_ratio"] == 0.8        # hit 3 + stale 1 of 5 answered with content
    assert (whole["bytes_served"], whole["bytes_from_upstream"], whole["bytes_saved"]) == (2400, 1300, 1100)
    assert (whole["clients"], whole["repositories"], whole["fills"]) == (3, 2, 2)
    assert whole["fill_seconds_p50"] == 0.25 and whole["fill_seconds_p95"] == 5.0
    assert (whole["stale"], whole["denied"], whole["since"]) == (1, 1, "2025-11-30T00:00:00Z")
    # A range cut at minutes: only the first day's first hour and a half.
    first = analytics(view).summary("hub", since=T0, until=T0 + HOUR + 30 * 60)
    assert first["pulls"]["hit"] == 2 and first["pulls"]["miss"] == 1 and first["bytes_served"] == 2000
    assert first["clients"] == 2


def test_without_an_org_the_summary_has_every_org_even_one_without_pulls(view):
    view.process(tracked(workload()))
    orgs = {entry["org"]: entry for entry in analytics(view).summary(since=T0, until=T0 + 2 * DAY)["orgs"]}
    assert set(orgs) == {"hub", "quay", "idle"}
    assert orgs["quay"]["pulls"]["hit"] == 1 and orgs["idle"]["pulls_total"] == 0 and orgs["idle"]["hit_ratio"] is None


@pytest.mark.parametrize("since, until", [
    (T0, T0 + 2 * DAY),                                     # whole days only
    (T0 + 60, T0 + DAY + 31 * 60),                          # minutes at both edges, hours, no whole day
    (T0 - 3 * HOUR + 120, T0 + 2 * DAY - 2 * HOUR - 60),    # minute and hour edges around two whole days
    (T0 + 70, T0 + 2 * HOUR + 60),                          # within one day: the edges alone
])
def test_the_summary_of_every_org_answers_what_each_org_s_own_summary_does(view, since, until):
    # One grouped query for every org (since issue 13's scale figures) must add up the same buckets as
    # the query of one org, on ranges whose cover mixes day, hour and minute buckets.
    more = [pull("hit", T0 + DAY + 20 * 60, org="quay", repository="coreos/etcd", client="10.0.0.9"),
            pull("miss", T0 + 2 * HOUR + 30, org="quay", repository="coreos/flannel"),
            report(T0 + DAY + 25 * 60, served=70, fetched=7, fills=(1.0,), org="quay")]
    view.process(tracked(workload() + [e for aggregate in more for e in aggregate.collect_events()]))
    every = {entry.pop("org"): entry for entry in analytics(view).summary(since=since, until=until)["orgs"]}
    for org in ("hub", "quay", "idle"):
        own = analytics(view).summary(org, since=since, until=until)
        assert every[org] == {key: value for key, value in own.items() if key != "org"}, org
    assert sum(entry["pulls_total"] for entry in every.values()) > 0


def test_a_series_has_one_point_per_bucket_with_zeros_between(view):
    view.process(tracked(workload()))
    series = analytics(view).series("hub", "pulls_total", "hour", since=T0, until=T0 + 3 * HOUR)
    assert [point["value"] for point in series["points"]] == [2, 1, 2]
    daily = analytics(view).series("hub", "bytes_served", "day", since=T0, until=T0 + 2 * DAY)
    assert [point["value"] for point in daily["points"]] == [2000, 400]
    assert [p["value"] for p in analytics(view).series("hub", "pulls.hit", "day", since=T0,
                                                       until=T0 + 2 * DAY)["points"]] == [2, 1]


def test_top_lists_rank_repositories_and_images_by_pulls_or_bytes(view):
    view.process(tracked(workload()))
    top = analytics(view).top("hub", "pulls", since=T0, until=T0 + 2 * DAY)
    assert top["repositories"][0] == {"repository": "library/alpine", "pulls": 5, "bytes_served": 2000}
    assert top["images"][0] == {"repository": "library/alpine", "reference": "3.19", "pulls": 5}
    by_bytes = analytics(view).top("hub", "bytes", since=T0 + DAY, until=T0 + 2 * DAY)
    assert by_bytes["repositories"] == [{"repository": "library/nginx", "pulls": 1, "bytes_served": 400}]


def test_bad_queries_and_unknown_orgs_are_refused(view):
    with pytest.raises(InvalidRequest):
        analytics(view).series("hub", "nonsense", "hour")
    with pytest.raises(InvalidRequest):
        analytics(view).series("hub", "pulls_total", "week")
    with pytest.raises(InvalidRequest):
        analytics(view).series("hub", "pulls_total", "minute", since=T0, until=T0 + 30 * DAY)
    with pytest.raises(InvalidRequest):
        analytics(view).summary("hub", since=T0 + 10, until=T0)
    with pytest.raises(OrgUnknown):
        analytics(view).summary("nobody")


def test_a_page_counts_once_and_a_replay_rebuilds_the_same_rows(view):
    events = workload()
    view.process(tracked(events[:5]))
    view.process(tracked(events[5:], start=6))
    with pytest.raises(IntegrityError):
        view.process(tracked(events[5:], start=6))     # the same page again changes nothing
    live = view.dump()
    view.clear()
    view.process(tracked(events))
    assert view.dump() == live


def test_an_evicted_image_counts_once_in_its_orgs_buckets_and_its_index_children_do_not(view):
    from domain.cache import CachedManifest
    index = CachedManifest(org="hub", repository="library/alpine", digest="sha256:index", media_type="index",
                           size=10, blobs=[], children=["sha256:child"], cached_at=T0)
    child = CachedManifest(org="hub", repository="library/alpine", digest="sha256:child", media_type="image",
                           size=10, blobs=["sha256:layer"], children=[], cached_at=T0)
    for manifest in (index, child):   # the image is the index; its child records the eviction too
        manifest.evict(image="sha256:index", tags=["3.19"], bytes=100, reason="quota", policy="lru",
                       actor="system:evictor", at=T0 + 30)
    events = [event for manifest in (index, child) for event in manifest.collect_events()]
    view.process([(event, Tracking("Registry", i + 1)) for i, event in enumerate(events)])
    assert analytics(view).summary("hub", since=T0, until=T0 + DAY)["evictions"] == 1
    assert analytics(view).summary("hub", since=T0 + HOUR, until=T0 + DAY)["evictions"] == 0


def test_distinct_counts_and_top_lists_are_those_of_the_pulls_themselves_on_any_range(view):
    """A random workload in pages of random sizes, pulls out of time order: the distinct clients and
    repositories of a range and its top lists are those counted from the pulls by hand."""
    import random
    from domain.analytics import minute_range
    rng = random.Random(5)
    pulls = []
    for _ in range(3000):
        image = min(int(rng.paretovariate(0.8)), 200)
        pulls.append(pull("hit", T0 + rng.randrange(0, 5 * DAY), client=f"10.0.{rng.randrange(3)}.{rng.randrange(60)}",
                          repository=f"app/image{image}", reference=f"v{image % 3}"))
    events = [event for aggregate in pulls for event in aggregate.collect_events()]
    position = 1
    while position <= len(events):
        size = rng.randrange(1, 400)
        view.process(tracked(events[position - 1:position - 1 + size], start=position))
        position += size
    asked = analytics(view, now=T0 + 6 * DAY)
    for _ in range(12):
        since = T0 + rng.randrange(-HOUR, 5 * DAY)
        until = since + rng.randrange(60, 5 * DAY)
        lo, hi = minute_range(since, until)
        inside = [e for e in events if lo <= e.at < hi]
        summary = asked.summary("hub", since, until)
        assert (summary["clients"], summary["repositories"]) == (len({e.client for e in inside}),
                                                                 len({e.repository for e in inside}))
        days = [e for e in events if lo // DAY * DAY <= e.at < -(-hi // DAY) * DAY]   # the whole days touched
        images, repositories = {}, {}
        for e in days:
            images[(e.repository, e.reference)] = images.get((e.repository, e.reference), 0) + 1
            repositories[e.repository] = repositories.get(e.repository, 0) + 1
        top = asked.top("hub", "pulls", since, until, limit=7)
        assert [(i["repository"], i["reference"], i["pulls"]) for i in top["images"]] == \
            [(*key, n) for key, n in sorted(images.items(), key=lambda item: (-item[1], item[0]))[:7]]
        assert [(r["repository"], r["pulls"]) for r in top["repositories"]] == \
            sorted(repositories.items(), key=lambda item: (-item[1], item[0]))[:7]


def test_a_top_list_of_many_days_and_many_repositories_answers_exactly(view):
    """A long range with a long list: the exact sums go in statements below the databases' parameter limits."""
    events = [event for day in range(400) for image in range(day % 3, 90, 3)
              for event in pull("hit", T0 + day * DAY + image, repository=f"app/image{image}",
                                reference="v1").collect_events()]
    view.process(tracked(events))
    top = analytics(view, now=T0 + 400 * DAY).top("hub", "pulls", T0, T0 + 400 * DAY, limit=1000)
    assert len(top["repositories"]) == 90 and sum(r["pulls"] for r in top["repositories"]) == len(events)
    assert top["repositories"][0] == {"repository": "app/image0", "pulls": 134, "bytes_served": 0}


def test_a_sqlite_view_of_schema_2_loses_its_member_rows_when_upgraded(tmp_path):
    """Schema 3 keeps members as sets: the upgrade drops schema 2's table of member rows with the others
    (a SQLite file's tables; PostgreSQL keeps a copy per version, so this runs on SQLite only)."""
    import sqlite3
    from infra.persistence import embedded_env
    env = embedded_env(tmp_path / "old")
    open_view("analytics", env).close()
    path = next((tmp_path / "old").rglob("analytics.db"))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE analytics_members (org TEXT, generation INTEGER, grain INTEGER, start INTEGER, "
                   "kind TEXT, member TEXT)")
        db.execute("PRAGMA user_version = 2")
    open_view("analytics", env).close()
    with sqlite3.connect(path) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "analytics_members" not in names and "analytics_member_sets" in names
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_a_postgres_copy_of_schema_2_is_rebuilt_and_its_member_rows_go_with_the_old_copy(env_factory):
    """PostgreSQL keeps a copy per version: the upgrade's new copy has no member rows, and the old copy's
    table of them, with the readers' name over it, is dropped too (the switch alone left both behind)."""
    from contextlib import closing

    from infra.projection_runtime import locks
    from infra.projection_runtime.locked import LockedRunners
    from projections import versions

    from application.pulls import Pulls

    env = env_factory("main")
    Pulls(env=env).write(workload())
    runners = LockedRunners(env, names=("analytics",)).start()
    try:
        runners.wait_caught_up(timeout=30)
    finally:
        runners.stop()
    view = open_view("analytics", env)
    before = view.dump()
    view.close()
    assert before["analytics_pulls"]
    schema = locks.schema_of(env)
    with closing(locks.connect(env)) as conn, conn.transaction():
        c = conn.cursor()
        live = versions.live_versions(c, schema)["analytics"]
        versions.record_schema(c, schema, "analytics", live, 2)   # as if made by the release before schema 3
        c.execute(f'CREATE TABLE "{schema}".analytics_members_v{live} (org text, member text)')
        c.execute(f'CREATE VIEW "{schema}".analytics_members AS SELECT * FROM "{schema}".analytics_members_v{live}')

    def names(kind: str) -> set[str]:
        with closing(locks.connect(env)) as conn:
            rows = conn.execute(f"SELECT {kind}name FROM pg_{kind}s WHERE schemaname = %s AND {kind}name LIKE %s",
                                (schema, "analytics%")).fetchall()
            return {row[0] for row in rows}

    runners = LockedRunners(env, names=("analytics",)).start()
    try:
        runners.wait_caught_up(timeout=30)
        with closing(locks.connect(env)) as conn:
            assert versions.live_versions(conn.cursor(), schema)["analytics"] == live + 1   # rebuilt
        assert "analytics_members" not in names("view")
        assert not {name for name in names("table") if name.startswith("analytics_members_v")}
        assert {name for name in names("table") if name.endswith("_tracking")} == {f"analytics_v{live + 1}_tracking"}
        rebuilt = open_view("analytics", env)
        try:
            assert rebuilt.dump() == before
        finally:
            rebuilt.close()
    finally:
        runners.stop()


def test_a_series_of_each_figure_equals_that_figure_of_the_full_buckets(view):
    """A series reads only the sums its figure is made of, and works out that figure alone: the same
    values as the figures the charts get for every bucket."""
    view.process(tracked(workload()))
    asked = analytics(view)
    _, _, buckets = asked.over_time("hub", "hour", T0, T0 + 2 * DAY, distinct=True)
    assert any(numbers["pulls_total"] for _, numbers in buckets) and any(numbers["fills"] for _, numbers in buckets)
    for metric in (*FIGURES, "pulls.hit", "pulls.denied", "pulls.unheard_of"):
        points = asked.series("hub", metric, "hour", T0, T0 + 2 * DAY)["points"]
        wanted = [numbers["pulls"].get(metric[6:], 0) if metric.startswith("pulls.") else numbers[metric]
                  for _, numbers in buckets]
        assert [point["value"] for point in points] == wanted, metric
