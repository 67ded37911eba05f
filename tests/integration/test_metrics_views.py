"""The read model's per-org totals behind the /metrics gauges, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import Tracking

from application.cache_records import CacheRecords
from domain.cache import CachedBlob, CachedManifest, TagResolution
from infra.projection_runtime import open_view, rebuild

pytestmark = pytest.mark.integration

IMAGE = "application/vnd.oci.image.manifest.v1+json"
M1, M2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
LAYERS = [f"sha256:{i:064x}" for i in range(1, 4)]


def test_per_org_totals_count_cached_blobs_manifests_and_tags_in_one_query_each(env_factory):
    env = env_factory("main")
    records = CacheRecords(env=env)
    try:
        for org in ("hub", "quay"):
            records.apply_org(org, {"upstream": "docker.io"})
        records.record_manifest("hub", "library/alpine", M1, IMAGE, 900, LAYERS, [], 1.0, tag="3.20")
        records.record_manifest("hub", "library/debian", M2, IMAGE, 100, LAYERS[:1], [], 1.0, tag="12")
        for size, layer in enumerate(LAYERS, start=1):
            records.record_blob("hub", "library/alpine", layer, size * 10, 2.0)
        records.record_blob("quay", "coreos/etcd", LAYERS[0], 10, 2.0)   # a shared blob counts for each org
    finally:
        records.close()
    for name in ("blobs", "manifests", "tags"):
        rebuild(name, env)
    views = {name: open_view(name, env) for name in ("blobs", "manifests", "tags")}
    try:
        assert views["blobs"].org_totals() == {"hub": (3, 60), "quay": (1, 10)}
        assert views["manifests"].org_totals() == {"hub": (2, 1000)}
        assert views["tags"].tag_counts() == {"hub": 2}
    finally:
        for view in views.values():
            view.close()


def test_kept_blob_totals_follow_recaching_and_a_new_org_of_the_same_name(env_factory):
    def cached(org, digest, size, generation=1):
        return CachedBlob(org=org, repository="library/alpine", digest=digest, size=size, cached_at=1.0,
                          generation=generation).collect_events()[0]

    view = open_view("blobs", env_factory("main"))
    try:
        pages = [[cached("hub", LAYERS[0], 10), cached("hub", LAYERS[1], 20), cached("quay", LAYERS[0], 10)],
                 [cached("hub", LAYERS[1], 20)],                              # the same blob cached again
                 [cached("hub", LAYERS[0], 10, generation=2), cached("hub", LAYERS[2], 30, generation=2)]]
        position = 0
        for page in pages:
            view.process([(event, Tracking("Registry", position := position + 1)) for event in page])
        assert view.org_blob_totals("hub") == (3, 60)
        assert view.org_blob_totals("hub", generation=1) == (1, 20)           # LAYERS[0] moved to generation 2
        assert view.org_blob_totals("hub", generation=2) == (2, 40)
        assert view.org_totals() == {"hub": (2, 40), "quay": (1, 10)}        # each org's latest generation
        assert view.org_blob_totals("nobody") == (0, 0)
    finally:
        view.close()


def test_kept_manifest_totals_count_a_manifest_once_and_drop_it_when_evicted(env_factory):
    def manifest(org, digest, size):
        return CachedManifest(org=org, repository="library/alpine", digest=digest, media_type=IMAGE, size=size,
                              blobs=LAYERS[:1], children=[], cached_at=1.0)

    first, again, other = manifest("hub", M1, 900), manifest("hub", M1, 900), manifest("quay", M2, 100)
    evicted = manifest("hub", M1, 900)
    evicted.collect_events()
    evicted.evict(M1, [], 900, "quota", "lru", "system:evictor", 5.0)
    view = open_view("manifests", env_factory("main"))
    try:
        events = [*first.collect_events(), *again.collect_events(), *other.collect_events()]
        view.process([(event, Tracking("Registry", n)) for n, event in enumerate(events, start=1)])
        assert view.org_totals() == {"hub": (1, 900), "quay": (1, 100)}
        view.process([(evicted.collect_events()[0], Tracking("Registry", 4))])
        assert view.org_totals() == {"quay": (1, 100)}
    finally:
        view.close()


def test_kept_tag_totals_count_tags_and_repositories_as_tags_come_move_and_go(env_factory):
    def resolution(org, repository, tag, digest=M1):
        return TagResolution(org=org, repository=repository, tag=tag, digest=digest, media_type=IMAGE, checked_at=1.0)

    one, two, other = resolution("hub", "library/a", "1"), resolution("hub", "library/a", "2"), resolution("hub", "b", "1")
    quay = resolution("quay", "library/a", "1")
    view = open_view("tags", env_factory("main"))
    position = 0

    def feed(*aggregates):
        nonlocal position
        for event in [event for aggregate in aggregates for event in aggregate.collect_events()]:
            position += 1
            view.process([(event, Tracking("Registry", position))])

    try:
        feed(one, two, other, quay)
        one.observe(M2, IMAGE, 2.0)                 # a move: the same tag
        feed(one)
        assert (view.org_tag_totals("hub"), view.tag_counts()) == ((3, 2), {"hub": 3, "quay": 1})
        one.drop("evicted", 3.0)
        feed(one)                                   # library/a keeps tag 2
        assert view.org_tag_totals("hub") == (2, 2)
        two.drop("evicted", 3.0)
        feed(two)                                   # library/a holds none now
        assert view.org_tag_totals("hub") == (1, 1)
        quay.drop("evicted", 3.0)
        feed(quay)
        assert (view.org_tag_totals("quay"), view.tag_counts()) == ((0, 0), {"hub": 1})
    finally:
        view.close()
