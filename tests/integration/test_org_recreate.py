"""Deleting an org leaves a clean slate for a new org of its name, on SQLite and PostgreSQL: `org delete
--flush`, the refusal of a delete that would drop cached images without saying so, counters and holdings
per generation, the audit keeping the old org's pulls, and all of it the same after a restart and a rebuild."""

from __future__ import annotations

import secrets
import time

import pytest
from litestar.testing import TestClient

from infra.projection_runtime import rebuild
from infra.settings import AnalyticsSettings, DatabaseSettings, SecuritySettings, Settings, UpstreamSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from projections.catalog import PROJECTION_NAMES
from tests.support.images import build_image, push_image
from tests.support.postgres import BACKENDS
from tests.support.retention import image_bytes

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
APP = build_image("recreate/app", layers=1, layer_size=20_000)
SIZE = image_bytes(APP)
ALPINE = "team/library/alpine"


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", APP)
    return registry


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path) -> Settings:
    database = DatabaseSettings()
    if request.param == "postgres":
        # A random schema in the module's database: id(tmp_path) was reused by a later test, which then found the
        # earlier test's org "team" there (409 in CI of 7df2e8c).
        schema = f"recreate_{secrets.token_hex(3)}"
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=schema)
    return Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN, organizations=(), database=database,
                    security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)),
                    # Traffic reports (bytes served, blob hits) every 0.2 s, so the analytics see them soon.
                    analytics=AnalyticsSettings(traffic_interval_seconds=0.2),
                    upstream=UpstreamSettings(prefetch_blobs=0))   # counts the blobs its pulls bring in


def serving(settings: Settings) -> TestClient:
    container = bootstrap(settings)
    client = TestClient(create_app(container))
    client.headers.update({"Authorization": f"Bearer {TOKEN}"})
    client.env = container.env
    return client


def until(read, expected, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def shown(api) -> tuple:
    """What `org show` says of team's cache: repositories, blobs, pulls by result, bytes stored."""
    body = api.get("/api/v1/organizations/team").json()
    tags = api.get("/api/v1/organizations/team/tags", params={"limit": 1000}).json()["items"]
    repositories = sorted({row["repository"] for row in tags})
    # Two reads: a tag projected between them makes them differ for a moment (a poll reads again), never for good.
    counts = (body["repository_count"], body["tag_count"]) == (len(repositories), len(tags))
    return (repositories, body["blob_count"], body["pulls"], body["bytes_stored"]) if counts else ("counts differ",)


def team_audit(api) -> list[tuple]:
    items = api.get("/api/v1/audit", params={"org": "team", "limit": 100}).json()["items"]
    return sorted((item["result"], item["generation"]) for item in items)


def image_pulls(api) -> list[int]:
    """The pull counts `entrepot images team` shows."""
    return [i["pull_count"] for i in api.get("/api/v1/organizations/team/images").json()["items"]]


def pull_manifest(api) -> str:
    response = api.get(f"/v2/{ALPINE}/manifests/3.19", headers=ACCEPT)
    assert response.status_code == 200, response.text
    return response.headers["x-cache"]


def test_a_deleted_org_leaves_a_clean_slate_for_a_new_org_of_its_name(settings, upstream):
    with serving(settings) as api:
        assert api.post("/api/v1/organizations", json={"name": "team", "upstream": upstream.url}).status_code == 201
        assert (pull_manifest(api), pull_manifest(api)) == ("MISS", "HIT")
        assert api.get(f"/v2/{ALPINE}/blobs/{APP.layers[0].digest}").status_code == 200
        old = (["library/alpine"], 1, {"hit": 1, "miss": 1}, SIZE)
        assert until(lambda: shown(api), old) == old

        # Without --flush an org that still caches images is not deleted, and nothing changes.
        bad = api.delete("/api/v1/organizations/team", params={"flush": "maybe"})
        assert bad.status_code in (400, 422) and "flush" in bad.text
        refused = api.delete("/api/v1/organizations/team")
        assert refused.status_code == 409
        assert refused.json()["error"]["message"] == (
            f"organization 'team' still caches 1 images ({SIZE} bytes): delete it with its cache "
            "(`entrepot org delete team --flush`, or `?flush=true`), or flush it first")
        assert shown(api) == old and pull_manifest(api) == "HIT"

        assert api.delete("/api/v1/organizations/team", params={"flush": "true"}).status_code == 204
        assert api.get("/api/v1/organizations/team").status_code == 404
        log = api.get("/api/v1/admin-log", params={"org": "team"}).json()["items"]
        assert log[-1]["action"] == "org.delete" and log[-1]["detail"] == f"flushed 1 images, {SIZE} bytes"
        evictions = api.get("/api/v1/audit/evictions", params={"org": "team"}).json()["items"]
        assert {(e["kind"], e["actor"]) for e in evictions} == {("flush", "admin"), ("eviction", "admin")}

        # The new org of that name holds nothing and has counted nothing; a pull goes upstream again.
        assert api.post("/api/v1/organizations", json={"name": "team", "upstream": upstream.url}).status_code == 201
        assert shown(api) == ([], 0, {}, 0)
        assert pull_manifest(api) == "MISS"
        assert api.get(f"/v2/{ALPINE}/blobs/{APP.layers[0].digest}").status_code == 200
        new = (["library/alpine"], 1, {"miss": 1}, SIZE)
        assert until(lambda: shown(api), new) == new
        # The audit keeps every pull, each as the org (generation) it was made by.
        history = [("hit", 1), ("hit", 1), ("miss", 1), ("miss", 2)]
        assert until(lambda: team_audit(api), history) == history
        # `images` counts the new org's pull of the image alone (the old org pulled it twice).
        assert until(lambda: image_pulls(api), [1]) == [1]

    with serving(settings) as api:   # a restart: the views kept say the same
        assert shown(api) == new and team_audit(api) == history and image_pulls(api) == [1]
    for name in PROJECTION_NAMES:    # views rebuilt from the events say the same too
        rebuild(name, api.env)
    with serving(settings) as api:
        assert until(lambda: shown(api), new) == new and team_audit(api) == history
        assert until(lambda: image_pulls(api), [1]) == [1]
        assert pull_manifest(api) == "HIT"


def figures(api, generation: str | None = None) -> tuple:
    """What `entrepot stats team` shows (the analytics summary): pulls by result, evictions, blob GETs, whether
    bytes were served; of the latest org of the name, or of `generation`."""
    params = {"org": "team", "since": "1h", **({"generation": generation} if generation else {})}
    body = api.get("/api/v1/analytics/summary", params=params).json()
    return ({k: n for k, n in body["pulls"].items() if n}, body["evictions"], body["blob_hits"] + body["blob_misses"],
            body["bytes_served"] > 0)


def top(api, generation: str | None = None) -> list:
    params = {"org": "team", **({"generation": generation} if generation else {})}
    return [(r["repository"], r["pulls"]) for r in api.get("/api/v1/analytics/top", params=params).json()["repositories"]]


def overview_pulls(api) -> int | None:
    orgs = api.get("/api/v1/analytics/summary", params={"since": "1h"}).json()["orgs"]
    return next((o["pulls_total"] for o in orgs if o["org"] == "team"), None)


def eviction_totals(api) -> dict:
    """`org show`'s eviction totals by reason."""
    return {reason: t["count"] for reason, t in api.get("/api/v1/organizations/team").json()["evictions"].items()}


def eviction_log(api, generation: str | None = None) -> list[tuple]:
    params = {"org": "team", **({"generation": generation} if generation else {})}
    items = api.get("/api/v1/audit/evictions", params=params).json()["items"]
    return sorted((e["kind"], e["generation"]) for e in items)


def test_a_new_org_of_the_name_shows_only_its_own_analytics_and_evictions(settings, upstream):
    """stats, analytics, the dashboard's summary, `org show`'s eviction totals: the latest org of the name
    only; the old one's stay there with ?generation=1 (or all), and the same after a restart and a rebuild."""
    with serving(settings) as api:
        assert api.post("/api/v1/organizations", json={"name": "team", "upstream": upstream.url}).status_code == 201
        assert (pull_manifest(api), pull_manifest(api)) == ("MISS", "HIT")
        assert api.get(f"/v2/{ALPINE}/blobs/{APP.layers[0].digest}").status_code == 200
        first = ({"hit": 1, "miss": 1}, 0, 1, True)
        assert until(lambda: figures(api), first) == first
        assert api.delete("/api/v1/organizations/team", params={"flush": "true"}).status_code == 204
        flushed = ({"hit": 1, "miss": 1}, 1, 1, True)   # the flush evicted the old org's one image
        assert until(lambda: figures(api), flushed) == flushed
        assert until(lambda: eviction_log(api), [("eviction", 1), ("flush", 1)]) == [("eviction", 1), ("flush", 1)]

        assert api.post("/api/v1/organizations", json={"name": "team", "upstream": upstream.url}).status_code == 201
        assert until(lambda: figures(api), ({}, 0, 0, False)) == ({}, 0, 0, False)   # a clean slate
        assert until(lambda: eviction_totals(api), {}) == {}
        assert pull_manifest(api) == "MISS"
        assert api.get(f"/v2/{ALPINE}/blobs/{APP.layers[0].digest}").status_code == 200
        # A flush of the new org (once the views list its image): its own eviction, counted for it alone.
        held = (["library/alpine"], 1, {"miss": 1}, SIZE)
        assert until(lambda: shown(api), held) == held
        assert api.post("/api/v1/organizations/team/flush", json={}).status_code == 200
        expected = {
            "latest": ({"miss": 1}, 1, 1, True), "1": flushed, "2": ({"miss": 1}, 1, 1, True),
            "all": ({"hit": 1, "miss": 2}, 2, 2, True), "top": [("library/alpine", 1)],
            "top all": [("library/alpine", 3)], "overview": 1, "org show": {"flush": 1},
            "log": [("eviction", 1), ("eviction", 2), ("flush", 1), ("flush", 2)],
            "log 1": [("eviction", 1), ("flush", 1)],
        }

        def answers(api) -> dict:
            return {"latest": figures(api), "1": figures(api, "1"), "2": figures(api, "2"), "all": figures(api, "all"),
                    "top": top(api), "top all": top(api, "all"), "overview": overview_pulls(api),
                    "org show": eviction_totals(api), "log": eviction_log(api), "log 1": eviction_log(api, "1")}
        assert until(lambda: answers(api), expected) == expected
        bad = api.get("/api/v1/analytics/summary", params={"org": "team", "generation": "0"})
        assert bad.status_code == 422 and "generation" in bad.text   # invalid admin input, as elsewhere
        assert api.get("/api/v1/audit/evictions", params={"generation": "two"}).status_code == 422

    with serving(settings) as api:   # a restart: the views kept say the same
        assert answers(api) == expected
    for name in ("analytics", "retention"):   # views rebuilt from the events say the same too
        rebuild(name, api.env)
    with serving(settings) as api:
        assert until(lambda: answers(api), expected) == expected
