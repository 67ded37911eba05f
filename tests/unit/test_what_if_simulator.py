"""The what-if simulator (domain/what_if.py) and its use case (application/what_if.py), with fakes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from application.admin import InvalidRequest
from application.cache_records import CacheRecords
from application.errors import OrgUnknown
from application.what_if import WhatIf, registry_catalog
from domain.retention import LFU_HALF_LIFE_SECONDS
from domain.what_if import Catalog, RecordedPull, UnknownPolicy, simulate

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
REPO = "library/app"
DAY = 86400.0


def image(name: str, *, layers: dict[str, int], manifest: int = 500) -> tuple[tuple, dict[str, int]]:
    return ("hub", REPO, f"sha256:{name}"), {f"sha256:{name}": manifest, **layers}


def catalog(*images) -> Catalog:
    return Catalog(dict(images))


def pulls(*names: str, start: float = 1_000_000.0, step: float = 60.0) -> list[RecordedPull]:
    return [RecordedPull("hub", REPO, f"sha256:{name}", start + i * step) for i, name in enumerate(names)]


THREE = catalog(image("1", layers={"l1": 10_000}), image("2", layers={"l2": 10_000}),
                image("3", layers={"l3": 10_000}))
ROOM_FOR_TWO = 25_000    # 2.5 images; the low watermark (90 %) is reached by one eviction


def test_lru_evicts_the_least_recently_pulled_image():
    outcome = simulate(pulls("1", "1", "1", "2", "3", "2", "3"), THREE, ROOM_FOR_TWO, "lru")
    assert outcome.evicted == [("hub", REPO, "sha256:1")]
    assert (outcome.pulls, outcome.hits, outcome.evictions) == (7, 4, 1)
    assert outcome.upstream_bytes == 3 * 10_500


def test_lfu_evicts_the_least_often_pulled_image_instead():
    outcome = simulate(pulls("1", "1", "1", "2", "3", "1"), THREE, ROOM_FOR_TWO, "lfu")
    assert outcome.evicted == [("hub", REPO, "sha256:2")]
    assert outcome.hits == 3   # 1, 1 and the last 1


def test_lfu_forgets_pulls_with_the_half_life():
    # Pulled three times five half-lives ago, the image weighs less than one pulled once today.
    old = pulls("1", "1", "1", step=1.0)
    recent = pulls("2", "3", start=old[-1].at + 5 * LFU_HALF_LIFE_SECONDS)
    outcome = simulate(old + recent, THREE, ROOM_FOR_TWO, "lfu")
    assert outcome.evicted == [("hub", REPO, "sha256:1")]


def test_a_shared_layer_is_fetched_and_counted_once():
    shared = catalog(image("1", layers={"base": 20_000, "a": 1_000}), image("2", layers={"base": 20_000, "b": 1_000}))
    outcome = simulate(pulls("1", "2"), shared, 23_000, "lru")
    assert outcome.evictions == 0                     # 20 000 + 2 x 1 500 fits: the base counts once
    assert outcome.upstream_bytes == 20_000 + 2 * 1_500


def test_an_image_larger_than_the_quota_is_fetched_and_not_kept():
    big = catalog(image("1", layers={"l1": 10_000}), image("big", layers={"x": 40_000}))
    outcome = simulate(pulls("1", "big", "big", "1"), big, ROOM_FOR_TWO, "lru")
    assert outcome.evicted == [("hub", REPO, "sha256:big"), ("hub", REPO, "sha256:big")]
    assert outcome.hits == 1


def test_a_pinned_image_is_never_evicted():
    outcome = simulate(pulls("1", "2", "3"), THREE, ROOM_FOR_TWO, "lru", pinned=frozenset({("hub", REPO, "sha256:1")}))
    assert outcome.evicted == [("hub", REPO, "sha256:2")]


def test_no_quota_means_every_repeat_is_a_hit():
    outcome = simulate(pulls("1", "2", "3", "1", "2", "3"), THREE, 0, "lru")
    assert (outcome.hits, outcome.evictions, outcome.hit_ratio) == (3, 0, 0.5)


def test_gdsf_keeps_many_small_images_where_lru_keeps_one_big_one():
    sizes = catalog(image("big", layers={"x": 30_000}), *(image(f"s{i}", layers={f"l{i}": 1_000}) for i in range(5)))
    # The big image is pulled once in a while; the small ones round-robin.
    sequence = pulls(*(["big", "s0", "s1", "s2", "s3", "s4"] * 6))
    lru = simulate(sequence, sizes, 32_000, "lru")
    gdsf = simulate(sequence, sizes, 32_000, "gdsf")
    assert gdsf.hits > lru.hits


def test_pulls_of_unknown_images_are_left_out_and_counted():
    outcome = simulate(pulls("1", "nope"), THREE, 0, "lru")
    assert (outcome.pulls, outcome.skipped) == (1, 1)


def test_an_unknown_policy_is_refused():
    with pytest.raises(UnknownPolicy):
        simulate([], THREE, 0, "fifo")


# -- the use case --------------------------------------------------------------------------------------
@dataclass
class Row:
    id: int
    org: str
    repository: str
    digest: str
    result: str
    at: float


class FakeReads:
    def __init__(self, rows: list[Row], evictions: list[str] = ()) -> None:
        self.rows, self.evictions = rows, evictions

    def audit(self, org, since, after_id, limit):
        return [r for r in self.rows if r.org == org and (since is None or r.at >= since)
                and (after_id is None or r.id > after_id)][:limit]

    def evictions_since(self, org, since):
        return list(self.evictions)

    def pinned(self, org):
        return []

    def upstream_bytes(self, org, since):
        return 12_345


def records_with_three_images() -> CacheRecords:
    records = CacheRecords(env=POPO)
    for name in ("1", "2", "3"):
        records.record_manifest("hub", REPO, f"sha256:{name}", "application/vnd.oci.image.manifest.v1+json", 500,
                                [f"l{name}"], [], 1.0, tag=name, sizes={f"l{name}": 10_000})
    records.record_manifest("other", REPO, "sha256:elsewhere", "application/vnd.oci.image.manifest.v1+json", 9,
                            ["x"], [], 1.0, sizes={"x": 9})
    return records


def test_the_catalog_is_read_from_the_registry_events_of_the_org():
    found = registry_catalog(records_with_three_images(), "hub", page_size=2)
    assert found.images == THREE.images


def test_an_index_counts_its_platform_manifests_and_their_layers():
    records = CacheRecords(env=POPO)
    records.record_manifest("hub", REPO, "sha256:index", "application/vnd.oci.image.index.v1+json", 300, [],
                            ["sha256:amd64"], 1.0, sizes={"sha256:amd64": 400})
    records.record_manifest("hub", REPO, "sha256:amd64", "application/vnd.oci.image.manifest.v1+json", 400,
                            ["layer"], [], 2.0, sizes={"layer": 7_000})
    found = registry_catalog(records, "hub")
    assert found.images == {("hub", REPO, "sha256:index"): {"sha256:index": 300, "sha256:amd64": 400, "layer": 7_000}}
    assert found.image_of(("hub", REPO, "sha256:amd64")) == ("hub", REPO, "sha256:index")


def test_the_report_sets_recorded_figures_beside_each_policy():
    rows = [Row(i + 1, "hub", REPO, f"sha256:{n}", result, 1_000.0 + i)
            for i, (n, result) in enumerate([("1", "miss"), ("1", "hit"), ("2", "miss"), ("3", "miss"),
                                              ("1", "stale"), ("9", "error"), ("", "denied")])]
    what_if = WhatIf(FakeReads(rows, evictions=[f"{REPO}@sha256:1", f"{REPO}@sha256:2"]),
                     records_with_three_images(), lambda org: org == "hub", lambda: 2_000.0)
    report = what_if.simulate("hub", ROOM_FOR_TWO, ["lru", "lfu", "gdsf"])
    assert report.recorded.pulls == 5 and report.recorded.hits == 2 and report.recorded.evictions == 2
    assert report.recorded.upstream_bytes == 12_345
    assert [figures.policy for figures in report.simulated] == ["lru", "lfu", "gdsf"]
    lru = report.simulated[0]
    assert (lru.pulls, lru.hits, lru.evictions) == (5, 1, 2)   # 1 goes when 3 arrives, 2 when 1 comes back
    assert lru.evicted == [f"{REPO}@sha256:1", f"{REPO}@sha256:2"]


def test_unknown_orgs_and_policies_are_refused():
    what_if = WhatIf(FakeReads([]), records_with_three_images(), lambda org: org == "hub", lambda: 0.0)
    with pytest.raises(OrgUnknown):
        what_if.simulate("nope", 1, ["lru"])
    with pytest.raises(InvalidRequest):
        what_if.simulate("hub", 1, ["lru", "fifo"])
    with pytest.raises(InvalidRequest):
        what_if.simulate("hub", -1, ["lru"])
