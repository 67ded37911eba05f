"""The retention admin API and CLI against a real upstream: flush a tag, a repository and an org (each
first as a dry run that changes nothing), pins, the images in eviction order, the eviction log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.settings import OrgSettings, Settings, StorageSettings
from tests.support.clock import ManualClock
from tests.support.components import require
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer
from tests.support.retention import REPO, Cache, image_bytes
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration
OTHER_REPO = "library/tool"
IMAGES = {tag: build_image(f"flush-{tag}", layers=2, layer_size=30_000) for tag in ("1", "2")}
TOOL = build_image("flush-tool", layers=1, layer_size=30_000)


@pytest.fixture
def cache(upstream_registry, tmp_path):
    require("skopeo")
    for tag, image in IMAGES.items():
        push_image(upstream_registry.url, REPO, tag, image)
    push_image(upstream_registry.url, OTHER_REPO, "1", TOOL)
    settings = Settings(data_dir=str(tmp_path / "data"), storage=StorageSettings(delete_grace_seconds=60),
                        organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),))
    with InProcessServer(settings, clock=ManualClock()) as server:
        cache = Cache(server, server.container.clock, tmp_path)
        for tag in IMAGES:
            cache.pull(tag)
        cache.pull("1", repository=OTHER_REPO)
        cache.settle()
        yield cache


def flush(cache: Cache, **body) -> dict:
    response = cache.api("POST", "/organizations/hub/flush", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def everything(cache: Cache) -> set[str]:
    return cache.held()


def test_flush_of_a_tag_dry_run_first_then_for_real(cache):
    before = everything(cache)
    expected = {"images": 1, "tags": 1, "blobs": 4, "bytes": image_bytes(IMAGES["1"]), "pinned_kept": 0}
    assert flush(cache, repository=REPO, tag="1", dry_run=True) == {**expected, "dry_run": True}
    assert everything(cache) == before and cache.x_cache("1") == "HIT"      # a dry run changes nothing
    assert flush(cache, repository=REPO, tag="1") == {**expected, "dry_run": False}
    assert everything(cache) == before - {IMAGES["1"].digest}
    assert cache.x_cache("1") == "MISS"                                      # fetched again from upstream
    kinds = [(e["kind"], e["dry_run"]) for e in cache.api("GET", "/audit/evictions?org=hub").json()["items"]]
    assert kinds[:3] == [("flush", False), ("eviction", False), ("flush", True)]


def test_flush_of_a_repository_and_of_the_org(cache):
    assert flush(cache, repository=REPO, dry_run=True)["images"] == 2
    assert len(everything(cache)) == 3
    assert flush(cache, repository=REPO)["images"] == 2
    assert everything(cache) == {TOOL.digest}
    assert flush(cache, dry_run=True)["images"] == 1 and everything(cache) == {TOOL.digest}
    assert flush(cache)["images"] == 1 and everything(cache) == set()
    shown = cache.api("GET", "/organizations/hub").json()
    assert shown["bytes_stored"] == 0 and shown["evictions"]["flush"]["count"] == 3
    cache.clock.advance(61)
    cache.settle()
    assert not any(cache.stored(d) for image in (*IMAGES.values(), TOOL) for d in [image.digest, *image.blobs])


def test_a_pinned_image_is_kept_by_a_flush_and_listed_last(cache):
    response = cache.api("POST", "/organizations/hub/pins", json={"repository": REPO, "tag": "1"})
    assert response.status_code == 200 and response.json()["digest"] == IMAGES["1"].digest
    assert [p["digest"] for p in cache.api("GET", "/organizations/hub/pins").json()["pins"]] == [IMAGES["1"].digest]
    page = cache.api("GET", "/organizations/hub/images?order=eviction&limit=2").json()
    assert page["policy"] == "lru" and len(page["items"]) == 2 and page["next_cursor"]
    rest = cache.api("GET", f"/organizations/hub/images?order=eviction&cursor={page['next_cursor']}").json()
    assert rest["items"][-1]["digest"] == IMAGES["1"].digest and rest["items"][-1]["pinned"] is True
    assert flush(cache, repository=REPO)["pinned_kept"] == 1
    assert everything(cache) == {IMAGES["1"].digest, TOOL.digest}
    response = cache.api("DELETE", "/organizations/hub/pins", json={"repository": REPO, "tag": "1"})
    assert response.status_code == 200
    assert cache.api("GET", "/organizations/hub/pins").json()["pins"] == []


@pytest.mark.parametrize("body, field", [
    ({"tag": "1"}, "tag"), ({"repository": "UPPER/case"}, "repository"), ({"repository": REPO, "tag": "bad tag"}, "tag"),
    ({"repository": REPO, "nope": 1}, "nope"), ({"dry_run": "yes"}, "dry_run")])
def test_a_bad_flush_is_422_and_changes_nothing(cache, body, field):
    before = everything(cache)
    response = cache.api("POST", "/organizations/hub/flush", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"].get("fields", {}) and everything(cache) == before


def test_flush_of_an_unknown_org_or_tag_is_404(cache):
    assert cache.api("POST", "/organizations/nope/flush", json={}).status_code == 404
    assert cache.api("POST", "/organizations/hub/flush", json={"repository": REPO, "tag": "9"}).status_code == 404
    assert cache.api("POST", "/organizations/hub/pins", json={"repository": REPO, "tag": "9"}).status_code == 404


def entrepot(cache: Cache, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENTREPOT_")}
    env.update({"ENTREPOT_URL": cache.server.url, "ENTREPOT_ADMIN_TOKEN": cache.container.admin_token})
    result = subprocess.run([sys.executable, "-m", "interfaces.cli", *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cli_lists_images_pins_and_flushes(cache):
    table = entrepot(cache, "images", "hub")
    assert "first evicted first (lru)" in table and table.count("library/") == 3
    assert "pinned hub/library/app@" in entrepot(cache, "pin", "hub", f"{REPO}:2")
    dry = entrepot(cache, "flush", "hub", REPO, "--dry-run")
    assert "would flush 1 images" in dry and "1 pinned images kept" in dry
    assert "flushed 1 images" in entrepot(cache, "flush", "hub", f"{REPO}:1")
    assert "unpinned" in entrepot(cache, "unpin", "hub", f"{REPO}:2")
    assert everything(cache) == {IMAGES["2"].digest, TOOL.digest}
