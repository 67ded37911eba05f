"""Deleting an org leaves a clean slate for a new org of its name, on SQLite and PostgreSQL: `org delete
--flush`, the refusal of a delete that would drop cached images without saying so, counters and holdings
per generation, the audit keeping the old org's pulls, and all of it the same after a restart and a rebuild."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient

from infra.projection_runtime import rebuild
from infra.settings import DatabaseSettings, SecuritySettings, Settings
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
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"recreate_{id(tmp_path)}")
    return Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN, organizations=(), database=database,
                    security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))


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
    assert body["repository_count"] == len(repositories) and body["tag_count"] == len(tags)
    return (repositories, body["blob_count"], body["pulls"], body["bytes_stored"])


def team_audit(api) -> list[tuple]:
    items = api.get("/api/v1/audit", params={"org": "team", "limit": 100}).json()["items"]
    return sorted((item["result"], item["generation"]) for item in items)


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

    with serving(settings) as api:   # a restart: the views kept say the same
        assert shown(api) == new and team_audit(api) == history
    for name in PROJECTION_NAMES:    # views rebuilt from the events say the same too
        rebuild(name, api.env)
    with serving(settings) as api:
        assert until(lambda: shown(api), new) == new and team_audit(api) == history
        assert pull_manifest(api) == "HIT"
