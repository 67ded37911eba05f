"""`entrepot serve` with the default `[upstream] prefetch_blobs`: a client's GET of a cold image manifest
brings the image's blobs in before the client asks, once each; a HEAD brings nothing."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration


def blob_gets(proxy) -> list[str]:
    return sorted(path.rsplit("/", 1)[1] for method, path, _ in proxy.requests if method == "GET" and "/blobs/" in path)


@pytest.fixture
def proxied(upstream_registry, entrepot_server_factory):
    image = build_image("prefetch", layers=2, layer_size=300_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    push_image(upstream_registry.url, "team/app", "2", build_image("prefetch-head", layers=1, layer_size=1000))
    with FaultProxy(upstream_registry.url) as proxy:
        yield entrepot_server_factory([{"name": "org", "upstream": proxy.url}]), proxy, image


def test_a_cold_manifest_get_fetches_the_image_blobs_before_the_client_asks_and_a_head_fetches_none(proxied):
    server, proxy, image = proxied
    wanted = sorted(blob.digest for blob in [image.config, *image.layers])
    head = httpx.head(f"{server.url}/v2/org/team/app/manifests/2", headers={"Accept": image.media_type}, timeout=30)
    assert head.status_code == 200
    answer = httpx.get(f"{server.url}/v2/org/team/app/manifests/1", headers={"Accept": image.media_type}, timeout=30)
    assert answer.headers["x-cache"] == "MISS"
    deadline = time.monotonic() + 20
    while blob_gets(proxy) != wanted:
        assert time.monotonic() < deadline, f"upstream blob GETs: {blob_gets(proxy)}"
        time.sleep(0.05)
    for blob in [image.config, *image.layers]:
        got = httpx.get(f"{server.url}/v2/org/team/app/blobs/{blob.digest}", timeout=30)
        assert got.status_code == 200 and got.content == blob.data
    assert blob_gets(proxy) == wanted   # once each, and nothing of the image only HEADed
