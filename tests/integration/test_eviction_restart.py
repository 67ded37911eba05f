"""A real `entrepot serve` on S3 (moto) SIGKILLed after recording a blob's deletion and before storage
deleted it: the next start finishes the deletion, once, and the views agree with storage."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import httpx
import pytest

from tests.support.images import build_image, push_image
from tests.support.peers import S3_ENV
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration
REPO = "library/app"
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
IMAGES = {tag: build_image(f"restart-{tag}", layers=2, layer_size=40_000) for tag in ("1", "2", "3")}


def image_bytes(image) -> int:
    return len(image.manifest_bytes) + sum(len(data) for data in image.blobs.values())


def pull(base_url: str, tag: str) -> dict[str, str]:
    """A client pull: the manifest by tag, then every blob; digest -> sha256 of what was received."""
    with httpx.Client(base_url=f"{base_url}/v2/hub/{REPO}", timeout=60) as client:
        manifest = client.get(f"/manifests/{tag}", headers=ACCEPT)
        manifest.raise_for_status()
        document = json.loads(manifest.content)
        received = {}
        for digest in [document["config"]["digest"], *[layer["digest"] for layer in document["layers"]]]:
            response = client.get(f"/blobs/{digest}")
            response.raise_for_status()
            received[digest] = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return received


def until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


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
