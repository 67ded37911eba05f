"""The views on their own, on SQLite and PostgreSQL: rows per event, exactly-once tracking, order, reads."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from application.ports import ManifestRow, TagRow
from domain.cache import CachedBlob, CachedManifest, TagResolution
from domain.org import CacheOrg
from domain.pull import Pull
from domain.referrers import Descriptor
from infra.projection_runtime import open_tags_and_manifests, open_view
from projections.audit import TIME_BLOCK
from projections.blobs import BlobRow
from tests.support.views import blob_row, manifest_pulls

pytestmark = pytest.mark.integration   # SQLite files and PostgreSQL (moved from tests/unit)
ORG, REPO = "hub", "library/alpine"
IMAGE, INDEX = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"
M1, IDX = "sha256:" + "1" * 64, "sha256:" + "9" * 64
CONFIG, LAYER = "sha256:" + "c" * 64, "sha256:" + "a" * 64


@pytest.fixture
def env(env_factory):
    return env_factory("main")   # one per backend (tests/support/postgres.py)


@pytest.fixture
def view(env):
    opened = []

    def open_(name):
        opened.append(open_view(name, env))
        return opened[-1]

    yield open_
    for v in opened:
        v.close()


def events(*aggregates):
    return [event for aggregate in aggregates for event in aggregate.collect_events()]


def tracked(app_name, evts, start=1):
    return [(event, Tracking(app_name, start + i)) for i, event in enumerate(evts)]


def pull(digest, result="hit", at=100.0, reference="latest"):
    return Pull(org=ORG, repository=REPO, reference=reference, digest=digest, result=result,
                client="10.0.0.7", user_agent="containerd/2.0", at=at)


def records_events():
    manifest = CachedManifest(org=ORG, repository=REPO, digest=M1, media_type=IMAGE, size=900,
                              blobs=[CONFIG, LAYER, LAYER], children=[], cached_at=10.0)
    index = CachedManifest(org=ORG, repository=REPO, digest=IDX, media_type=INDEX, size=300,
                           blobs=[], children=[M1], cached_at=10.0)
    blobs = [CachedBlob(org=ORG, repository=REPO, digest=digest, size=size, cached_at=11.0)
             for digest, size in ((CONFIG, 5), (LAYER, 70))]
    return events(manifest, index, *blobs)


def pulls_events():
    return events(pull(IDX, "miss", 20.0), pull(M1, "miss", 21.0), pull(M1, "hit", 50.0), pull(M1, "stale", 40.0))


def test_tags_resolve_revalidate_retarget(view):
    tags = view("tags")
    resolution = TagResolution(org=ORG, repository=REPO, tag="3", digest=M1, media_type=IMAGE, checked_at=1.0)
    resolution.observe(M1, IMAGE, 2.0)     # revalidated
    resolution.observe(IDX, INDEX, 3.0)    # retargeted
    tags.process(tracked("Registry", events(resolution)))
    assert tags.get_tag(ORG, REPO, "3") == TagRow(IDX, INDEX, 3.0)
    assert tags.get_tag(ORG, REPO, "4") is None
    assert tags.list_tags(ORG, REPO) == ["3"]


def test_replayed_position_raises_and_changes_nothing(view):
    counters, audit, blobs = view("counters"), view("audit"), view("blobs")
    blobs.process(tracked("Registry", records_events()))
    batch = tracked("Pulls", pulls_events())
    for v in (counters, audit, blobs):
        v.process(batch)
        before = v.dump()
        with pytest.raises(IntegrityError):
            v.process(batch)                # the same events at the same positions
        with pytest.raises(IntegrityError):
            v.process(batch[1:2])           # an older position on its own
        assert v.dump() == before
    assert counters.counts() == {ORG: {"miss": 2, "hit": 1, "stale": 1}}
    assert counters.max_tracking_id("Pulls") == 4
    assert blob_row(blobs, ORG, LAYER).pull_count == 3


def test_blob_pulls_do_not_depend_on_how_the_two_apps_interleave(view, env_factory):
    records, pulls = tracked("Registry", records_events()), tracked("Pulls", pulls_events())
    first = view("blobs")
    for item in records:          # manifests and blobs known before any pull
        first.process([item])
    for item in pulls:
        first.process([item])
    other = open_view("blobs", env_factory("other"))
    try:
        for item in pulls:         # pulls first: the cold-pull order, blobs cached later
            other.process([item])
        other.process(records)
        assert other.dump() == first.dump()
    finally:
        other.close()
    # Three pulls of M1 count for each of its blobs once (LAYER is listed twice); the index pull does not.
    assert blob_row(first, ORG, LAYER) == BlobRow(ORG, LAYER, REPO, 70, 11.0, 50.0, 3)
    assert blob_row(first, ORG, CONFIG).pull_count == 3
    assert manifest_pulls(first, ORG, REPO, IDX) == (1, 20.0)
    assert manifest_pulls(first, ORG, REPO, M1) == (3, 50.0)
    assert [b.digest for b in first.list_blobs(ORG)] == sorted([CONFIG, LAYER])  # same last_pulled: by digest


def test_a_blob_pulled_but_not_cached_is_not_listed(view):
    blobs = view("blobs")
    blobs.process(tracked("Registry", records_events()[:1]))   # the manifest only
    blobs.process(tracked("Pulls", events(pull(M1))))
    assert blob_row(blobs, ORG, LAYER) is None
    assert blobs.list_blobs(ORG) == []
    blobs.process(tracked("Registry", records_events()[2:], start=2))
    assert blob_row(blobs, ORG, LAYER).pull_count == 1


def test_audit_query_filters_and_pages(view):
    audit = view("audit")
    audit.process(tracked("Pulls", pulls_events()))
    assert [r.id for r in audit.query()] == [1, 2, 3, 4]
    assert [r.result for r in audit.query(result="miss")] == ["miss", "miss"]
    assert [r.id for r in audit.query(since=21.0, until=50.0)] == [2, 4]
    assert [r.id for r in audit.query(after_id=1, limit=2)] == [2, 3]
    assert audit.query(org="other") == [] and audit.query(repository="x") == []
    row = audit.query(limit=1)[0]
    assert (row.org, row.repository, row.reference, row.digest, row.client, row.user_agent, row.at) == (
        ORG, REPO, "latest", IDX, "10.0.0.7", "containerd/2.0", 20.0)


def test_audit_since_and_until_find_every_pull_in_range_whatever_order_they_were_recorded_in(view):
    # Ids span several audit_times blocks; some pulls were recorded long after they happened (a backlog
    # written back after an outage), so time does not follow id order.
    audit = view("audit")
    times = {1: 100.0, 2: 300.0, 3: 100.0, TIME_BLOCK + 1: 50.0, TIME_BLOCK + 2: 60.0,
             3 * TIME_BLOCK + 5: 200.0, 3 * TIME_BLOCK + 6: 20.0}
    for position, at in times.items():
        audit.process([(events(pull(M1, at=at))[0], Tracking("Pulls", position))])
    for since in (10.0, 55.0, 100.0, 150.0, 250.0, 400.0):
        expected = [position for position, at in times.items() if at >= since]
        assert [r.id for r in audit.query(since=since)] == expected
        assert [r.id for r in audit.query(since=since, until=250.0, limit=2)] == [
            position for position in expected if times[position] < 250.0][:2]
        assert [r.id for r in audit.query(until=since)] == [p for p, at in times.items() if at < since]
    assert [r.id for r in audit.query(since=55.0, after_id=2)] == [3, TIME_BLOCK + 2, 3 * TIME_BLOCK + 5]


def test_audit_query_filters_by_client_address_and_user_agent_substring(view):
    audit = view("audit")
    other = Pull(org=ORG, repository=REPO, reference="1", digest=M1, result="hit", client="10.0.0.8",
                 user_agent="containers/5.23.1 (github.com/containers/image)", at=60.0)
    audit.process(tracked("Pulls", [*pulls_events(), *events(other)]))
    assert [r.id for r in audit.query(client="10.0.0.8")] == [5]
    assert [r.id for r in audit.query(user_agent="containerd")] == [1, 2, 3, 4]
    assert [r.id for r in audit.query(user_agent="github.com/containers", client="10.0.0.8")] == [5]
    assert audit.query(user_agent="%") == [] and audit.query(client="10.0.0") == []


@pytest.mark.parametrize("column", ["client", "actor"])
def test_audit_pages_by_client_or_actor_follow_an_index_not_the_whole_log(view, monkeypatch, column):
    # Without (client, id) and (actor, id), a page for a node or robot that pulled little or nothing walked
    # the log in id order to the end (~0.7 s at 5M pulls, bench/results/2026-11-30-scale-sqlite-5m-s7.md).
    audit = view("audit")
    pulls = [Pull(org=ORG, repository=REPO, reference="latest", digest=M1, result="hit", client=f"10.0.{n % 50}.1",
                  user_agent="containerd/2.0", at=float(n), actor=f"robot{n % 50}") for n in range(2000)]
    plans = planned_audit(audit, pulls, monkeypatch)
    assert audit.query(**{column: "nobody"}) == []
    assert [r.id for r in audit.query(**{column: pulls[7].client if column == "client" else "robot7"}, limit=3)] == [
        8, 58, 108]
    assert f"audit_{column}_id" in plans()[0], plans()[0]


def planned_audit(audit, pulls, monkeypatch):
    """Record `pulls` into the audit view, analyzed; returns plans(): the plan of each query it ran since
    (and plans.asked: their texts and parameters)."""
    audit.process(tracked("Pulls", events(*pulls)))
    if hasattr(audit, "version"):   # PostgreSQL plans with statistics
        audit._analyze()
    asked = []
    query = audit._query
    monkeypatch.setattr(audit, "_query", lambda text, params=(): asked.append((text, params)) or query(text, params))
    explain = "EXPLAIN " if hasattr(audit, "version") else "EXPLAIN QUERY PLAN "

    def plans() -> list[str]:
        return [" ".join(str(part) for row in query(explain + text, params) for part in row) for text, params in asked]
    plans.asked = asked   # the (text, params) of each query
    return plans


def zipf_pulls(count: int) -> list[Pull]:
    """Pulls spread over orgs, repositories, digests, clients and robots as a busy site's are: value k of each
    column (k = 0, 1, ...) about 1/(k+1) as often as the first, so one value is common and others rare."""
    weights = [1 / (k + 1) for k in range(40)]
    ranks = random.Random(16).choices(range(40), weights, k=count * 5)

    def value(column: int, n: int) -> int:
        return ranks[n * 5 + column]

    return [Pull(org=f"team{value(0, n):02}", repository=f"library/app{value(1, n)}", reference="latest",
                 digest=f"sha256:{value(2, n):064x}", result="miss" if n % 50 == 3 else "hit",
                 client=f"10.0.0.{value(3, n)}", user_agent="containerd/2.0", at=float(n), actor=f"robot{value(4, n)}")
            for n in range(count)]


@pytest.mark.parametrize("column", ["org", "repository", "digest", "client", "actor"])
def test_audit_pages_of_common_and_rare_values_walk_that_columns_index(view, monkeypatch, column):
    # On PostgreSQL the indexes are keyed by hashtext(column) and a query says both hashtext(column) =
    # hashtext($1) and column = $1. Taken as independent clauses, a less popular org's page was estimated at
    # a handful of rows and walked the primary key in id order instead: 2.35 -> 46.8 ms at 10M pulls, while
    # a test with one org saw nothing (bench/results/2026-12-03-audit-index-keys.md). Each value, common or
    # rare, must be found through its own column's index.
    audit = view("audit")
    pulls = zipf_pulls(30000)
    plans = planned_audit(audit, pulls, monkeypatch)
    ranked = [value for value, _ in Counter(getattr(p, column) for p in pulls).most_common()]
    common, middling, rare = ranked[0], ranked[len(ranked) // 2], ranked[-1]
    for value in (common, middling, rare):
        expected = [n + 1 for n, p in enumerate(pulls) if getattr(p, column) == value]
        assert [r.id for r in audit.query(**{column: value}, limit=50)] == expected[:50]
        deep = expected[len(expected) // 2]
        assert [r.id for r in audit.query(**{column: value}, after_id=deep, limit=50)] == [
            i for i in expected if i > deep][:50]
    # Each page walks an index in id order and stops at its limit: the common value's the primary key (most
    # rows match), the others' their column's index. Estimated at a row or two, the rarer values' pages took
    # every matching row through a bitmap and sorted them (a less popular org's 200,000 rows at 10M pulls);
    # SQLite's sort would say "USE TEMP B-TREE FOR ORDER BY".
    index = {"digest": "audit_digest"}.get(column, f"audit_{column}_id")
    for n, plan in enumerate(plans()):
        assert "Sort" not in plan and "Bitmap" not in plan and "TEMP B-TREE" not in plan, plan
        if n >= 2:   # the middling and the rare value
            assert index in plan or (column == "org" and "audit_org_v" in plan), plan


@pytest.mark.parametrize("org", [None, ORG])
def test_audit_pages_of_a_rare_result_follow_a_partial_index_not_the_whole_log(view, monkeypatch, org):
    # Most pulls are hits: without the partial (result, id) and (org, result, id) indexes, a page of the
    # few denied pulls walked the log to its end (the whole of it for a result no pull has), and
    # ?org&result=miss&since=7d took 81 ms at 10M pulls on PostgreSQL (bench/results/…-scale-postgres-10m-s9.md).
    audit = view("audit")
    results = {n: "denied" if n % 500 == 7 else "miss" if n % 100 == 3 else "hit" for n in range(3000)}
    pulls = [Pull(org=ORG if n % 3 else "other", repository=REPO, reference="latest", digest=M1, result=results[n],
                  client="10.0.0.7", user_agent="containerd/2.0", at=float(n)) for n in range(3000)]
    plans = planned_audit(audit, pulls, monkeypatch)
    denied = [n + 1 for n in range(3000) if results[n] == "denied" and (org is None or n % 3)]
    assert [r.id for r in audit.query(org=org, result="denied")] == denied
    assert [r.id for r in audit.query(org=org, result="stale")] == []
    assert [r.id for r in audit.query(org=org, result="miss", since=2000.0, limit=2)] == [
        n + 1 for n in range(2000, 3000) if results[n] == "miss" and (org is None or n % 3)][:2]
    hits = [r.id for r in audit.query(org=org, result="hit", limit=5)]   # hits: no partial index, same answers
    assert hits == [n + 1 for n in range(3000) if results[n] == "hit" and (org is None or n % 3)][:5]
    for plan in plans()[:3]:
        # Either partial index holds only the rare rows (a planner may take (result, id) with org a filter).
        assert "audit_result_id" in plan or "audit_org_result_id" in plan, plan


AGENTS = ("containerd/1.7.20", "containerd/2.0.1", "cri-o/1.30.2 os/linux", "skopeo/1.13.3", "curl/8.5.0",
          "curl/8.11.1", "podman/4.9.4")


def agent_pulls(count: int) -> list[Pull]:
    # curl is rare (every 97th and 389th pull), the runtimes common; two orgs.
    return [Pull(org=ORG if n % 4 else "other", repository=REPO, reference="latest", digest=M1, result="hit",
                 client="10.0.0.7", at=float(n),
                 user_agent=AGENTS[4] if n % 97 == 5 else AGENTS[5] if n % 389 == 11 else AGENTS[n % 4 if n % 7 else 6])
            for n in range(count)]


def test_audit_pages_by_a_rare_user_agent_read_that_agents_rows_not_the_whole_log(view, monkeypatch):
    # A substring no agent has answered only after a walk of the whole log, and one few pulls have walked
    # most of it for one page (2.0 s at 10M pulls on PostgreSQL): now the view's distinct agents decide.
    audit = view("audit")
    pulls = agent_pulls(3000)
    plans = planned_audit(audit, pulls, monkeypatch)

    def expected(substring, org=None, after=0, limit=100):
        return [n + 1 for n, p in enumerate(pulls) if substring in p.user_agent and (org is None or p.org == org)
                and n + 1 > after][:limit]

    assert audit.query(user_agent="wget") == []
    # The agents' list, no page read: on SQLite a probe per agent of (user_agent, id); PostgreSQL's index holds
    # the agents' hashes, and the view keeps their list in a table of its own.
    listing = "audit_agents" if hasattr(audit, "version") else "audit_user_agent_id"
    assert len(plans()) == 1 and listing in plans()[0], plans()
    assert [r.id for r in audit.query(user_agent="curl/8.5")] == expected("curl/8.5")
    assert "audit_user_agent_id" in plans()[-1], plans()[-1]
    curl = [r.id for r in audit.query(user_agent="curl", limit=7)]   # two agents, merged in id order
    assert curl == expected("curl", limit=7)
    assert [r.id for r in audit.query(user_agent="curl", after_id=curl[-1], limit=1000)] == expected("curl", after=curl[-1],
                                                                                                   limit=1000)
    assert [r.id for r in audit.query(user_agent="curl", org="other")] == expected("curl", org="other")
    assert [r.user_agent for r in audit.query(user_agent="curl", since=500.0, until=1200.0)] == [
        p.user_agent for p in pulls[500:1200] if "curl" in p.user_agent]
    # A common substring, more agents than AGENT_ARMS, or more distinct agents than MOST_AGENTS: the id walk,
    # with the same answers.
    assert [r.id for r in audit.query(user_agent="/", limit=50)] == expected("/", limit=50)
    monkeypatch.setattr("projections.audit.AGENT_ARMS", 1)
    assert [r.id for r in audit.query(user_agent="curl", limit=9)] == expected("curl", limit=9)
    assert "user_agent = " not in plans.asked[-1][0]
    monkeypatch.setattr("projections.audit.MOST_AGENTS", 3)
    assert [r.id for r in audit.query(user_agent="curl/8.11")] == expected("curl/8.11")
    assert audit.query(user_agent="wget") == []


def test_org_tag_pages_walk_every_cached_tag_of_one_org_by_repository_and_tag(view):
    tags = view("tags")
    resolutions = [TagResolution(org=org, repository=repo, tag=tag, digest=M1, media_type=IMAGE, checked_at=1.0)
                   for org, repo, tag in ((ORG, "library/b", "2"), (ORG, "library/a", "1"), (ORG, "library/b", "1"),
                                          ("other", "library/a", "1"), (ORG, "library/a-b", "1"))]
    tags.process(tracked("Registry", events(*resolutions)))
    first = tags.org_tag_page(ORG, None, 2)
    assert [(r.repository, r.tag, r.digest, r.media_type) for r in first] == [
        ("library/a", "1", M1, IMAGE), ("library/a-b", "1", M1, IMAGE)]
    rest = tags.org_tag_page(ORG, (first[-1].repository, first[-1].tag), 10)
    assert [(r.repository, r.tag) for r in rest] == [("library/b", "1"), ("library/b", "2")]
    assert tags.org_tag_page(ORG, ("library/b", "2"), 10) == [] and tags.org_tag_page("nobody", None, 10) == []
    assert [r.tag for r in tags.org_tag_page(ORG, ("library/b", "1"), 10, repository="library/b")] == ["2"]
    assert tags.org_tag_totals(ORG) == (4, 3) and tags.org_tag_totals("nobody") == (0, 0)
    assert tags.org_repositories(ORG) == ["library/a", "library/a-b", "library/b"]


def test_blob_pages_walk_the_cached_blobs_of_one_org_by_digest_and_skip_ones_only_pulled(view):
    blobs = view("blobs")
    digests = [f"sha256:{n:064x}" for n in range(5)]
    cached = [CachedBlob(org=ORG, repository=REPO, digest=d, size=10 * (n + 1), cached_at=1.0)
              for n, d in enumerate(digests)]
    cached.append(CachedBlob(org="other", repository=REPO, digest=digests[0], size=99, cached_at=1.0))
    blobs.process(tracked("Registry", events(*cached)))
    first = blobs.blob_page(ORG, None, 3)
    assert [(b.digest, b.size) for b in first] == [(digests[0], 10), (digests[1], 20), (digests[2], 30)]
    assert [b.digest for b in blobs.blob_page(ORG, first[-1].digest, 3)] == digests[3:]
    assert blobs.org_blob_totals(ORG) == (5, 150) and blobs.org_blob_totals("nobody") == (0, 0)


def test_orgs_register_reconfigure_delete(view):
    orgs = view("orgs")
    org = CacheOrg(name="ghcr", settings={"upstream": "https://ghcr.io", "staleness_seconds": 60})
    org.reconfigure({"staleness_seconds": 120})
    gone = CacheOrg(name="tmp", settings={"upstream": "https://quay.io"})
    gone.delete()
    orgs.process(tracked("Registry", events(org, gone)))
    assert [o.name for o in orgs.list_orgs()] == ["ghcr"]
    assert orgs.get_org("ghcr").settings == {"upstream": "https://ghcr.io", "staleness_seconds": 120}
    assert orgs.get_org("tmp").deleted and [o.name for o in orgs.list_orgs(include_deleted=True)] == ["ghcr", "tmp"]


def test_tag_and_manifest_lookups_read_from_many_threads(view, env):
    cache = open_tags_and_manifests(env)               # before any row or runner: tables are created
    try:
        assert cache.get_tag(ORG, REPO, "3") is None
        view("manifests").process(tracked("Registry", records_events()))
        resolution = TagResolution(org=ORG, repository=REPO, tag="3", digest=M1, media_type=IMAGE, checked_at=1.0)
        view("tags").process(tracked("Registry", events(resolution)))
        results, errors = [], []

        def read():
            try:
                for _ in range(50):
                    results.append((cache.get_tag(ORG, REPO, "3"), cache.get_manifest(ORG, REPO, M1),
                                    cache.list_tags(ORG, REPO)))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(results) == 200
        assert set(map(repr, results)) == {repr((TagRow(M1, IMAGE, 1.0),
                                                 ManifestRow(M1, IMAGE, 900, [CONFIG, LAYER, LAYER], []), ["3"]))}
        assert cache.get_manifest(ORG, REPO, "sha256:" + "0" * 64) is None
    finally:
        cache.close()


def test_audit_rows_carry_status_error_code_and_note_and_counters_count_errors(view):
    audit, counters = view("audit"), view("counters")
    stale = Pull(org=ORG, repository=REPO, reference="3", digest=M1, result="stale", client="10.0.0.7",
                 user_agent="containerd/2.0", at=30.0, note="upstream unavailable (503): down; serving the cached copy")
    failed = Pull(org=ORG, repository=REPO, reference="gone", digest="", result="error", client="10.0.0.7",
                  user_agent="containerd/2.0", at=31.0, note="manifest gone is unknown upstream", status=404,
                  error_code="MANIFEST_UNKNOWN")
    batch = tracked("Pulls", events(pull(M1), stale, failed))
    audit.process(batch)
    counters.process(batch)
    assert [(r.result, r.status, r.error_code, r.note) for r in audit.query()] == [
        ("hit", 200, "", ""), ("stale", 200, "", stale.note), ("error", 404, "MANIFEST_UNKNOWN", failed.note)]
    assert [r.reference for r in audit.query(result="error")] == ["gone"]
    assert counters.counts(ORG) == {ORG: {"hit": 1, "stale": 1, "error": 1}}


def test_referrers_lists_cached_manifests_by_subject_oldest_first_each_once(view):
    referrers = view("referrers")
    sbom_type, sig_type = "application/vnd.example.sbom.v1", "application/vnd.dev.cosign.simplesigning.v1+json"
    signature = CachedManifest(org=ORG, repository=REPO, digest="sha256:" + "5" * 64, media_type=IMAGE, size=40,
                               blobs=[], children=[], cached_at=30.0, subject=M1, artifact_type=sig_type,
                               annotations={"dev.sigstore.cosign/bundle": "x"})
    sbom = CachedManifest(org=ORG, repository=REPO, digest="sha256:" + "4" * 64, media_type=INDEX, size=50,
                          blobs=[], children=[], cached_at=20.0, subject=M1, artifact_type=sbom_type, annotations={})
    elsewhere = CachedManifest(org="other", repository=REPO, digest="sha256:" + "6" * 64, media_type=IMAGE, size=1,
                               blobs=[], children=[], cached_at=1.0, subject=M1, artifact_type=sig_type, annotations={})
    batch = tracked("Registry", records_events() + events(signature, sbom, elsewhere))
    referrers.process(batch)
    assert referrers.referrers(ORG, REPO, M1) == [
        Descriptor(INDEX, sbom.digest, 50, sbom_type, {}),
        Descriptor(IMAGE, signature.digest, 40, sig_type, {"dev.sigstore.cosign/bundle": "x"})]
    assert referrers.referrers(ORG, REPO, IDX) == [] and referrers.referrers(ORG, "else", M1) == []
    assert len(referrers.referrers("other", REPO, M1)) == 1
    with pytest.raises(IntegrityError):
        referrers.process(batch)            # exactly once: the same positions again change nothing
    assert len(referrers.referrers(ORG, REPO, M1)) == 2
