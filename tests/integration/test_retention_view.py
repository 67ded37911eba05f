"""The retention view on SQLite and PostgreSQL: image bytes, eviction rankings, pins, usage and orphans."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import Tracking

from domain.cache import CachedBlob, CachedManifest, TagResolution
from domain.pull import Pull
from domain.retention import ImagePin, StoredBlob, plan_eviction
from infra.projection_runtime import open_view
from tests.support.views import events_of

pytestmark = pytest.mark.integration
ORG, OTHER, REPO = "hub", "quay", "library/app"
IMAGE, INDEX = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"


def d(char: str) -> str:
    return "sha256:" + char * 64


A, B, C, IDX, CHILD = d("a"), d("b"), d("c"), d("9"), d("8")
SHARED, LA, LB, LC, LCHILD = d("5"), d("1"), d("2"), d("3"), d("4")


@pytest.fixture
def retention(env_factory):
    view = open_view("retention", env_factory("main"))
    yield Feed(view)
    view.close()


class Feed:
    """Events into the view in notification order, as the runners would give them."""

    def __init__(self, view) -> None:
        self.view, self.position = view, {"Registry": 0, "Pulls": 0}

    def __call__(self, app: str, *aggregates_or_events) -> None:
        batch = []
        for event in events_of(*aggregates_or_events):
            self.position[app] += 1
            batch.append((event, Tracking(app, self.position[app])))
        self.view.process(batch)

    def image(self, digest: str, layers: dict[str, int], at: float, org: str = ORG, tag: str = "") -> None:
        manifest = CachedManifest(org=org, repository=REPO, digest=digest, media_type=IMAGE, size=100,
                                  blobs=list(layers), children=[], cached_at=at)
        blobs = [CachedBlob(org=org, repository=REPO, digest=layer, size=size, cached_at=at)
                 for layer, size in layers.items()]
        tags = [TagResolution(org=org, repository=REPO, tag=tag, digest=digest, media_type=IMAGE, checked_at=at)
                ] if tag else []
        self("Registry", manifest, *tags, *blobs)

    def pull(self, digest: str, at: float, org: str = ORG) -> None:
        self("Pulls", Pull(org=org, repository=REPO, reference="x", digest=digest, result="hit", client="c",
                           user_agent="skopeo", at=at))


def order(view, policy: str, org: str | None = ORG) -> list[str]:
    return [image.digest for image in view.ranking(org, policy, limit=10)]


def test_lru_and_lfu_disagree_on_the_first_victim(retention):
    retention.image(A, {LA: 1000}, at=1.0)
    retention.image(B, {LB: 1000}, at=2.0)
    for at in (10.0, 11.0, 12.0):
        retention.pull(A, at)          # A: often, but long ago
    retention.pull(B, 20.0)            # B: once, recently
    assert order(retention.view, "lru") == [A, B]
    assert order(retention.view, "lfu") == [B, A]
    ranked = {image.digest: image for image in retention.view.ranking(ORG, "lru", limit=10)}
    assert ranked[A].pull_count == 3 and ranked[A].last_used == 12.0 and ranked[A].bytes == 1100


def test_a_pinned_image_is_no_victim_and_is_listed_last(retention):
    retention.image(A, {LA: 10}, at=1.0)
    retention.image(B, {LB: 10}, at=2.0)
    retention("Registry", ImagePin(org=ORG, repository=REPO, digest=A, tag="", actor="admin", at=3.0))
    assert order(retention.view, "lru") == [B]
    assert [i.digest for i in retention.view.ranking(ORG, "lru", limit=10, victims_only=False)] == [B, A]
    assert retention.view.pinned_usage(ORG) == 110


def test_a_layer_shared_by_two_images_counts_once_and_frees_with_the_last(retention):
    retention.image(A, {SHARED: 500, LA: 10}, at=1.0)
    retention.image(B, {SHARED: 500, LB: 20}, at=2.0)
    assert retention.view.usage(ORG) == 500 + 10 + 20 + 2 * 100
    candidates = [retention.view.candidate(image, ORG) for image in retention.view.ranking(ORG, "lru", limit=10)]
    (first, second), left = plan_eviction(usage=730, target=0, candidates=candidates)
    assert left == 0
    assert first.freed == 110 and SHARED not in first.freed_digests
    assert second.freed == 620 and SHARED in second.freed_digests


def counted_usage(view, org):
    """Usage counted from the members and sizes, as the view answered before it kept a total."""
    scope, params = ("WHERE org = ?", (org,)) if org is not None else ("", ())
    return int(view.read(f"SELECT coalesce(sum(s.size), 0) FROM (SELECT DISTINCT digest FROM {{members}} {scope}) d "
                         "JOIN {sizes} s ON s.digest = d.digest", params)[0][0])


def test_the_kept_usage_of_each_org_and_of_the_cache_is_what_counting_the_members_gives(retention):
    def evicted(org, digest, blobs, children=()):
        manifest = CachedManifest(org=org, repository=REPO, digest=digest, media_type=IMAGE, size=100,
                                  blobs=list(blobs), children=list(children), cached_at=1.0)
        manifest.collect_events()
        manifest.evict(digest, [], 0, "quota", "lru", "system:evictor", 50.0)
        return manifest

    index = CachedManifest(org=OTHER, repository=REPO, digest=IDX, media_type=INDEX, size=300, blobs=[],
                           children=[CHILD], cached_at=1.0)
    child = CachedManifest(org=OTHER, repository=REPO, digest=CHILD, media_type=IMAGE, size=200,
                           blobs=[LCHILD, SHARED], children=[], cached_at=1.5)
    steps = [
        lambda: retention.image(A, {SHARED: 500, LA: 10}, at=1.0),
        lambda: retention.image(B, {SHARED: 500, LB: 20}, at=2.0),                 # SHARED again: counted once
        lambda: retention("Registry", CachedManifest(org=ORG, repository=REPO, digest=C, media_type=IMAGE, size=100,
                                                     blobs=[LC], children=[], cached_at=3.0)),   # LC's size unknown
        lambda: retention.image(A, {SHARED: 500, LA: 10}, at=4.0, org=OTHER),      # the same image in another org
        lambda: retention("Registry", index, child),                              # an index, its child later
        lambda: retention("Registry", CachedBlob(org=ORG, repository=REPO, digest=LC, size=3000, cached_at=5.0)),
        lambda: retention("Registry", evicted(ORG, A, [SHARED, LA])),             # SHARED stays with B
        lambda: retention("Registry", evicted(ORG, B, [SHARED, LB])),             # ... and leaves with it
        lambda: retention("Registry", evicted(OTHER, A, [SHARED, LA])),           # the child still lists SHARED
        lambda: retention("Registry", evicted(OTHER, IDX, [], [CHILD])),
    ]
    for step in steps:
        step()
        for org in (ORG, OTHER, None):
            assert retention.view.usage(org) == counted_usage(retention.view, org)
    assert [retention.view.usage(org) for org in (ORG, OTHER, None)] == [100 + 3000, 0, 100 + 3000]


def test_an_index_holds_its_children_and_their_layers_cached_later(retention):
    index = CachedManifest(org=ORG, repository=REPO, digest=IDX, media_type=INDEX, size=300, blobs=[],
                           children=[CHILD], cached_at=1.0)
    child = CachedManifest(org=ORG, repository=REPO, digest=CHILD, media_type=IMAGE, size=200, blobs=[LCHILD],
                           children=[], cached_at=1.5)
    layer = CachedBlob(org=ORG, repository=REPO, digest=LCHILD, size=4000, cached_at=2.0)
    retention("Registry", index, child, layer)
    assert order(retention.view, "lru") == [IDX]            # the child is not an image of its own
    assert retention.view.ranking(ORG, "lru", limit=1)[0].bytes == 300 + 200 + 4000
    assert set(retention.view.candidate(retention.view.ranking(ORG, "lru", limit=1)[0], ORG).members) == {
        IDX, CHILD, LCHILD}


def test_a_pull_recorded_before_the_image_is_cached_still_counts(retention):
    retention.pull(A, 5.0)
    retention.image(A, {LA: 10}, at=4.0)
    image = retention.view.ranking(ORG, "lfu", limit=1)[0]
    assert (image.pull_count, image.last_used) == (1, 5.0)


def test_eviction_drops_the_image_and_orphans_only_what_no_org_references(retention):
    retention.image(A, {SHARED: 500, LA: 10}, at=1.0, tag="1")
    retention.image(B, {SHARED: 500, LB: 20}, at=1.0, org=OTHER)
    manifest = CachedManifest(org=ORG, repository=REPO, digest=A, media_type=IMAGE, size=100, blobs=[SHARED, LA],
                              children=[], cached_at=1.0)
    manifest.collect_events()
    manifest.evict(A, ["1"], 610, "quota", "lru", "system:evictor", 50.0)
    retention("Registry", manifest)
    assert order(retention.view, "lru") == []
    assert retention.view.usage(ORG) == 0
    due = {digest: state for digest, _, _, state in retention.view.orphans_due(cutoff=50.0)}
    assert due == {A: "waiting", LA: "waiting"}                 # SHARED is still OTHER's
    assert retention.view.orphans_due(cutoff=49.0) == []       # not before the grace period
    assert retention.view.eviction_totals(ORG) == {"quota": (1, 610)}
    [entry] = retention.view.log(org=ORG, kind="eviction")
    assert (entry.digest, entry.tags, entry.bytes, entry.reason) == (A, "1", 610, "quota")


def test_deletion_under_way_stays_due_until_recorded_done(retention):
    retention("Registry", CachedBlob(org=ORG, repository=REPO, digest=LA, size=10, cached_at=1.0))
    assert [row[0] for row in retention.view.orphans_due(cutoff=1.0)] == [LA]   # stored, referenced by nothing
    blob = StoredBlob(digest=LA)
    blob.orphan(10, 1.0, "system:evictor", 70.0)
    retention("Registry", blob)
    assert retention.view.orphans_due(cutoff=0.0) == [(LA, 10, 1.0, "deleting")]   # a restart finishes it
    blob.delete("system:evictor", 71.0)
    retention("Registry", blob)
    assert retention.view.orphans_due(cutoff=100.0) == []


def test_recached_after_eviction_is_held_again_and_no_longer_orphaned(retention):
    retention.image(A, {LA: 10}, at=1.0)
    manifest = CachedManifest(org=ORG, repository=REPO, digest=A, media_type=IMAGE, size=100, blobs=[LA],
                              children=[], cached_at=1.0)
    manifest.collect_events()
    manifest.evict(A, [], 110, "quota", "lru", "system:evictor", 50.0)
    manifest.recache(IMAGE, 100, [LA], [], 60.0)
    retention("Registry", manifest)
    assert order(retention.view, "lru") == [A]
    assert retention.view.orphans_due(cutoff=1000.0) == []
    assert retention.view.usage(ORG) == 110


def test_a_deleted_blob_stored_again_alone_is_due_for_deletion_again(retention):
    blob = StoredBlob(digest=LA)
    blob.orphan(10, 1.0, "system:evictor", 70.0)
    blob.delete("system:evictor", 71.0)
    blob.restore(10, 80.0)           # a GET of the blob alone brought it back; no image references it
    retention("Registry", blob)
    assert retention.view.orphans_due(cutoff=80.0) == [(LA, 10, 80.0, "waiting")]


def test_an_image_just_cached_counts_its_miss_before_the_pull_event_is_projected(retention):
    retention.image(A, {LA: 10}, at=1.0)
    retention.pull(A, 1.0)
    retention.image(B, {LB: 10}, at=2.0)          # its Pull not projected yet: not "never pulled" for LFU
    assert order(retention.view, "lfu") == [A, B]
    retention.pull(B, 2.0)                         # the provisional pull is replaced, not added to
    assert order(retention.view, "lfu") == [A, B]
    ranked = {image.digest: image for image in retention.view.ranking(ORG, "lfu", limit=10)}
    assert ranked[B].pull_count == 1 and ranked[A].score == pytest.approx(ranked[B].score - 1.0 / (7 * 86400))


def test_a_bulk_rebuild_keeps_the_members_indexes_retention_writes_through(retention):
    # Without them each manifest's sizes, orphans and usage scan every member: a rebuild of 200k images
    # would take days. The view's other secondary indexes serve reads only and are dropped.
    view = retention.view
    view.drop_indexes()
    if hasattr(view, "version"):   # PostgreSQL: this copy's names carry its version
        rows = view.read(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{view.datastore.schema}' "
                         f"AND tablename IN ('members_v{view.version}', 'images_v{view.version}')")
        names = {name.removesuffix(f"_v{view.version}") for (name,) in rows}
    else:
        names = {name for (name,) in view.read("SELECT name FROM sqlite_master WHERE type = 'index' "
                                               "AND tbl_name IN ('members', 'images') AND sql IS NOT NULL")}
    assert {"retention_members_digest", "retention_members_org"} <= names
    assert "retention_lru" not in names
    view.restore_indexes()


# SQLite only: PostgreSQL plans with statistics, and its statement names no index.
@pytest.mark.parametrize("event_store_backend", ["sqlite"])
def test_the_usage_of_a_new_member_is_looked_up_by_org_and_digest(retention, monkeypatch):
    # SQLite's planner, without statistics, took the covering primary key for `m.org = ? AND m.digest = ...`:
    # every member of the org per new digest, so caching N images of one org cost N^2 (10 s of a 1,000-image
    # rebuild). The statement names the (org, digest) index on SQLite.
    view = retention.view
    statements = []
    run = view.run
    monkeypatch.setattr(view, "run", lambda c, text, params=(): statements.append((text, params)) or run(c, text, params))
    retention.image(A, {LA: 10, SHARED: 5}, at=1.0)
    retention.image(B, {LB: 10, SHARED: 5}, at=2.0)
    by_org = [(text, params) for text, params in statements if "m.org = ? AND m.digest = s.digest" in text]
    assert by_org
    for text, params in by_org:
        plan = view.read(f"EXPLAIN QUERY PLAN {text}", params)
        assert any("retention_members_org" in str(row[-1]) for row in plan), plan
    assert retention.view.usage(ORG) == 10 + 10 + 5 + 2 * 100


# SQLite only, as above.
@pytest.mark.parametrize("event_store_backend", ["sqlite"])
def test_a_page_of_pulls_reads_its_images_by_primary_key(retention, monkeypatch):
    # `(org, repository, digest) IN (VALUES ...)` was planned as a scan of every image per chunk of keys: with
    # 200,000 images a rebuild's pulls read the table over and over (issue 16). The keys now drive the join.
    view = retention.view
    retention.image(A, {LA: 10}, at=1.0)
    retention.image(B, {LB: 10}, at=2.0)
    statements = []
    run = view.run
    monkeypatch.setattr(view, "run", lambda c, text, params=(): statements.append((text, params)) or run(c, text, params))
    retention("Pulls", *(Pull(org=ORG, repository=REPO, reference="x", digest=digest, result="hit", client="c",
                              user_agent="skopeo", at=at) for digest, at in ((A, 3.0), (B, 4.0), (A, 5.0))))
    reads = [(text, params) for text, params in statements if text.lstrip().startswith("SELECT")]
    assert reads
    for text, params in reads:
        plan = [str(row[-1]) for row in view.read(f"EXPLAIN QUERY PLAN {text}", params)]
        assert not any(step.startswith("SCAN i") for step in plan), plan
        assert any(step.startswith("SEARCH i USING") for step in plan), plan
    assert [(image.digest, image.pull_count) for image in view.held_images(ORG)] == [(A, 2), (B, 1)]


def varied_history() -> list:
    """Registry events touching every table the view writes: shared layers, an index and its child cached
    later, blobs before and after their manifest, an orphan stored again, evictions and a pin."""
    def manifest(digest, blobs, at, org=ORG, children=(), sizes=None):
        return CachedManifest(org=org, repository=REPO, digest=digest, media_type=INDEX if children else IMAGE,
                              size=100, blobs=list(blobs), children=list(children), cached_at=at, sizes=sizes or {})

    def blob(digest, size, at, org=ORG):
        return CachedBlob(org=org, repository=REPO, digest=digest, size=size, cached_at=at)

    a, b = manifest(A, [SHARED, LA], 1.0, sizes={SHARED: 500}), manifest(B, [SHARED, LB], 2.0)
    index, child = manifest(IDX, [], 3.0, org=OTHER, children=[CHILD]), manifest(CHILD, [LCHILD, SHARED], 4.0, org=OTHER)
    stored = StoredBlob(digest=d("7"))
    stored.orphan(70, 5.0, "system:evictor", 6.0)
    stored.delete("system:evictor", 7.0)
    stored.restore(70, 8.0)
    c = manifest(C, [LC, d("7")], 9.0)
    pin = ImagePin(org=ORG, repository=REPO, digest=B, tag="", actor="admin", at=10.0)
    a.evict(A, ["v1"], 510, "quota", "lru", "system:evictor", 11.0)
    page_one = [a, blob(SHARED, 500, 1.0), blob(LA, 10, 1.0), blob(LA, 11, 1.5),
                TagResolution(org=ORG, repository=REPO, tag="v1", digest=A, media_type=IMAGE, checked_at=1.0),
                b, blob(LB, 20, 2.0)]
    page_two = [index, blob(d("6"), 60, 3.0, org=OTHER)]                 # changes children: read per manifest
    page_three = [blob(LCHILD, 40, 3.5, org=OTHER), child, blob(SHARED, 500, 4.0, org=OTHER), stored, c,
                  blob(LC, 30, 9.0)]                                    # reads the index of the child at once
    page_four = [pin, a]                                                 # an eviction, a pin
    return [events_of(*page) for page in (page_one, page_two, page_three, page_four)]


def test_a_page_written_at_once_holds_what_its_events_written_one_by_one_hold(env_factory):
    # process_page writes blobs stored one after another together, reads the orgs' generations once and the
    # indexes of a page's manifests at once (and on PostgreSQL pipelines its statements): the rows must be
    # those of each event in a transaction of its own, whatever the pages.
    pages = varied_history()
    dumps = []
    for tag, split in (("one", [[event] for page in pages for event in page]), ("paged", pages),
                       ("whole", [[event for page in pages for event in page]])):
        feed = Feed(open_view("retention", env_factory(tag)))
        try:
            for page in split:
                feed("Registry", *page)
            dumps.append(feed.view.dump())
        finally:
            feed.view.close()
    assert dumps[0]["images"] and dumps[0]["orphans"] and dumps[0]["retention_log"] and dumps[0]["children"]
    assert dumps[1] == dumps[0]
    assert dumps[2] == dumps[0]


@pytest.mark.parametrize("event_store_backend", ["postgres"])
def test_postgresql_writes_the_rows_sqlite_writes(env_factory, tmp_path):
    # PostgreSQL adds sizes and members in one statement each (retention_sql.py), SQLite in several: the same
    # history must leave the same rows in both.
    from infra.persistence import embedded_env

    def normalised(view) -> dict:
        return {table: sorted((tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows), key=repr)
                for table, rows in view.dump().items() if table != "tracking" and not table.endswith("tracking")}

    dumps = []
    for env in (env_factory("main"), embedded_env(tmp_path / "sqlite")):
        feed = Feed(open_view("retention", env))
        try:
            for page in varied_history():
                feed("Registry", *page)
            feed.pull(B, 20.0)
            dumps.append(normalised(feed.view))
        finally:
            feed.view.close()
    assert dumps[0]["org_usage"] and dumps[0]["images"]
    assert dumps[0] == dumps[1]


def evicted(org, digest, blobs, children=()):
    manifest = CachedManifest(org=org, repository=REPO, digest=digest, media_type=IMAGE, size=100,
                              blobs=list(blobs), children=list(children), cached_at=1.0)
    manifest.collect_events()
    manifest.evict(digest, [], 0, "quota", "lru", "system:evictor", 50.0)
    return manifest


def usage_history(feed: Feed) -> None:
    """varied_history, then an org whose images all leave (kept up, its usage row stays, at 0) and a pull."""
    for page in varied_history():
        feed("Registry", *page)
    feed.image(d("7"), {SHARED: 500, d("e"): 70}, at=30.0, org="gone")
    feed("Registry", evicted("gone", d("7"), [SHARED, d("e")]))
    feed.pull(B, 20.0)


def test_a_bulk_rebuild_sums_the_usage_once_at_the_end_to_what_keeping_it_up_gives(env_factory):
    # A bulk rebuild from empty (drop_indexes ... restore_indexes: a PostgreSQL copy, a SQLite view in place) writes
    # members and sizes alone and sums the images' bytes and the usages before the indexes are made
    # (RetentionView.settle_usage).
    dumps = []
    for tag, bulk in (("kept", False), ("bulk", True)):
        feed = Feed(open_view("retention", env_factory(tag)))
        try:
            if bulk:
                feed.view.drop_indexes()
            usage_history(feed)
            if bulk:
                assert feed.view.usage_deferred and not feed.view.dump()["org_usage"]   # nothing kept up meanwhile
                feed.view.restore_indexes()
                assert not feed.view.usage_deferred
            dumps.append({table: rows for table, rows in feed.view.dump().items() if "tracking" not in table})
        finally:
            feed.view.close()
    assert dumps[0]["org_usage"] and any(bytes_ == 0 for _, bytes_ in dumps[0]["org_usage"])
    assert any(row[6] > 0 for row in dumps[0]["images"])   # bytes
    assert dumps[1] == dumps[0]


@pytest.mark.parametrize("event_store_backend", ["sqlite"])
def test_a_sqlite_bulk_rebuild_killed_midway_has_its_usage_summed_when_the_view_is_next_opened(env_factory):
    # A SQLite bulk rebuild is in place: killed before restore_indexes, it leaves its tracking past events whose
    # usage it deferred, and the set of orgs it noted dies with it. The next opening sees an index it drops missing
    # and sums the usage from members, sizes and the evictions logged: the rows keeping it up gives. A view that
    # was not killed is opened without a write.
    env = env_factory("kept")
    kept = Feed(open_view("retention", env))
    try:
        usage_history(kept)
        expected = {table: rows for table, rows in kept.view.dump().items() if "tracking" not in table}
    finally:
        kept.view.close()
    reopened = open_view("retention", env)
    reopened.close()

    env = env_factory("killed")
    killed = Feed(open_view("retention", env))
    killed.view.drop_indexes()
    usage_history(killed)
    assert killed.view.usage_deferred and not killed.view.dump()["org_usage"]
    killed.view.close()   # killed: no restore_indexes
    again = open_view("retention", env)
    try:
        assert {table: rows for table, rows in again.dump().items() if "tracking" not in table} == expected
        assert expected["org_usage"] and any(bytes_ == 0 for _, bytes_ in expected["org_usage"])   # "gone", at 0
        assert not again.usage_deferred
    finally:
        again.close()



def gatherable_history() -> list[list]:
    """Pages of Registry events for a bulk rebuild's gathering (retention_gathering.py): mostly events it gathers
    (orgs registered and recreated, manifests with and without children, children cached before and after their
    index, blobs before and after their manifest, blobs stored alone, tags moved and dropped, a key cached twice),
    with pages it cannot gather in between (an orphan deleted, an eviction, a pin)."""
    from domain.org import CacheOrg

    pages: list[list] = []

    def page(*items) -> None:
        pages.append(events_of(*items))

    def manifest(digest, blobs, at, org=ORG, children=(), sizes=None):
        return CachedManifest(org=org, repository=REPO, digest=digest, media_type=INDEX if children else IMAGE,
                              size=100 + len(blobs), blobs=list(blobs), children=list(children), cached_at=at,
                              sizes=sizes or {})

    def blob(digest, size, at, org=ORG):
        return CachedBlob(org=org, repository=REPO, digest=digest, size=size, cached_at=at)

    def tag(name, digest, at, org=ORG):
        return TagResolution(org=org, repository=REPO, tag=name, digest=digest, media_type=IMAGE, checked_at=at)

    hub = CacheOrg(name=ORG, settings={"upstream": "docker.io"})
    quay = CacheOrg(name=OTHER, settings={"upstream": "quay.io"})
    a, v1, latest = manifest(A, [SHARED, LA], 2.0, sizes={SHARED: 500, LA: 9}), tag("v1", A, 2.0), tag("latest", A, 2.0)
    page(hub, quay, blob(LA, 10, 1.0), blob(d("6"), 60, 1.5), a, blob(LA, 11, 2.5), v1, latest)
    page(blob(SHARED, 500, 2.8), manifest(CHILD, [LCHILD, SHARED], 3.0, org=OTHER),    # a child before its index
         blob(LCHILD, 40, 3.1, org=OTHER), manifest(IDX, [], 4.0, org=OTHER, children=[CHILD, d("e")]),
         manifest(d("e"), [d("f")], 5.0, org=OTHER), blob(d("f"), 80, 5.1, org=OTHER))   # ... and one after it
    page(manifest(B, [SHARED, LB], 6.0), blob(LB, 20, 6.1), manifest(B, [SHARED, LB, LC], 6.5),   # a key twice
         blob(d("6"), 61, 6.6), blob(d("7"), 70, 6.7))
    stored = StoredBlob(digest=d("7"))
    stored.collect_events()   # its creation: not a retention event
    stored.orphan(70, 7.0, "system:evictor", 7.5)
    stored.delete("system:evictor", 8.0)
    page(stored)
    a.collect_events()
    a.evict(A, ["v1"], 510, "quota", "lru", "system:evictor", 9.0)
    v1.collect_events()
    v1.drop("quota", 9.0)
    page(a, v1)
    page(ImagePin(org=ORG, repository=REPO, digest=B, tag="", actor="admin", at=10.0))
    stored.restore(70, 11.5)
    v1.observe(B, IMAGE, 11.0)
    latest.collect_events()
    latest.observe(B, IMAGE, 11.0)
    a.recache(IMAGE, 102, [SHARED, LA], [], 12.0)
    page(stored, v1, latest, a)
    page(manifest(C, [LC, d("7")], 13.0, org=OTHER))                          # before the org's recreation
    quay.collect_events()
    quay.delete()
    quay.reconfigure({"upstream": "quay.io"})                                    # generation 2
    page(quay, manifest(d("b"), [LC], 14.0, org=OTHER), blob(LC, 30, 14.1, org=OTHER))
    return pages


def test_registry_events_gathered_in_a_bulk_rebuild_write_what_event_by_event_writes(env_factory):
    # A bulk rebuild (a PostgreSQL copy, a SQLite view in place) gathers the Registry events that only add
    # (retention_gathering.py) and writes them a statement per table (SQLite: executemany); pages it cannot gather
    # write the gathering first, then themselves.
    from infra.projection_runtime.bulk import Gathering

    pages = gatherable_history()
    dumps, gathered_pages = [], []
    for tag, limit in (("kept", None), ("paged", 0), ("gather1", 1), ("gather4", 4), ("gatherall", 1000)):
        view = open_view("retention", env_factory(tag))
        try:
            if limit is not None:
                view.drop_indexes()
            gathering = Gathering(view, limit) if limit else None
            position, took = 0, 0
            for events in pages:
                batch = []
                for event in events:
                    position += 1
                    if type(event) in view.handles:   # as a replay filters a view's pages by topic
                        batch.append((event, Tracking("Registry", position)))
                if gathering is not None and gathering.add(batch):
                    took += 1
                    continue
                if gathering is not None:
                    gathering.write()
                view.process(batch)
            if gathering is not None:
                gathering.write()
                gathering.close()
                gathered_pages.append(took)
            if limit is not None:
                view.restore_indexes()
            dumps.append({table: rows for table, rows in view.dump().items() if "tracking" not in table})
        finally:
            view.close()
    kept = dumps[0]
    assert gathered_pages == [6, 6, 6]   # every page but the orphan's deletion, the eviction and the pin
    assert kept["children"] and kept["orphans"] and kept["image_tags"] and kept["org_usage"]
    assert {row[-1] for row in kept["images"] if row[0] == OTHER} == {1, 2}   # generations before and after
    assert any(row[6] > 0 for row in kept["images"])   # bytes
    for tag, dump in zip(("paged", "gather1", "gather4", "gatherall"), dumps[1:]):
        assert dump == kept, tag
