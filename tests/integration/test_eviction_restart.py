"""A real `entrepot serve` on S3 (moto) SIGKILLed after recording a blob's deletion and before storage
deleted it: the next start finishes the deletion, once, and the views agree with storage."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.images import push_image
from tests.support.peers import S3_ENV
from tests.support.retention import REPO, http_pull as pull, image_bytes, three_images, until
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration
IMAGES = three_images("restart")


def api(server, token: str, path: str) -> dict:
    return httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()


def test_sigkill_between_the_deletion_event_and_storage_finishes_after_restart(
        upstream_registry, entrepot_server_factory, moto_s3, s3_bucket):
    for tag, image in IMAGES.items():
        push_image(upstream_registry.url, REPO, tag, image)
    quota = int(2.5 * max(image_bytes(image) for image in IMAGES.values()))
    proxy = TcpProxy(moto_s3.port).start()
    token = secrets.token_hex(16)
    try:
        proxy.hold("DELETE")   # the first deletion waits: the process is killed in between
        server = entrepot_server_factory(
            [{"name": "hub", "upstream": upstream_registry.url, "quota_bytes": quota}],
            env={**S3_ENV, "ENTREPOT_ADMIN_TOKEN": token},
            sections={"storage": {"backend": "s3", "bucket": s3_bucket, "endpoint_url": proxy.url,
                                  "delete_grace_seconds": 1}})
        for tag in ("1", "2", "3"):
            assert set(pull(server.url, tag).values()) == set(IMAGES[tag].blobs)
        first = IMAGES["1"]
        assert proxy.held.wait(30), "the reaper never got to delete"   # evicted, grace passed, Orphaned recorded
        server.kill()
        keys = set(moto_s3.keys(s3_bucket))
        assert all(any(k.endswith(d.split(":")[1]) for k in keys) for d in first.blobs)   # nothing deleted yet

        proxy.release()
        server.start()
        gone = [d.split(":")[1] for d in [first.digest, *first.blobs]]
        until(lambda: not any(k.endswith(g) for k in moto_s3.keys(s3_bucket) for g in gone), what="the deletion")
        # The views agree with storage: image 1 is gone from tags, images and usage; 2 and 3 are whole.
        until(lambda: api(server, token, "/organizations/hub")["bytes_stored"] == image_bytes(IMAGES["2"])
              + image_bytes(IMAGES["3"]), what="the retention view")
        held = {item["digest"] for item in api(server, token, "/organizations/hub/images?order=eviction")["items"]}
        assert held == {IMAGES["2"].digest, IMAGES["3"].digest}
        for tag in ("2", "3"):
            assert set(pull(server.url, tag).values()) == set(IMAGES[tag].blobs)
        assert set(pull(server.url, "1").values()) == set(first.blobs)   # fetched again, whole
    finally:
        proxy.stop()
