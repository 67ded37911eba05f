"""Two `entrepot serve` replicas sharing PostgreSQL, S3 (moto_server) and Redis, pulled from concurrently."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import httpx
import pytest
from eventsourcing.cryptography import AESCipher

from tests.support.images import build_image, push_image
from tests.support.peers import S3_ENV
from tests.support.processes import concurrently

pytestmark = pytest.mark.e2e
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}


def pull(base_url: str, image) -> dict[str, str]:
    """A client pull: the manifest by tag, then every blob; returns digest -> sha256 of the bytes received."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        manifest = client.get("/v2/hub/library/alpine/manifests/3.19", headers=ACCEPT)
        manifest.raise_for_status()
        received = {"manifest": manifest.headers["docker-content-digest"],
                    "manifest-bytes": "sha256:" + hashlib.sha256(manifest.content).hexdigest()}
        document = json.loads(manifest.content)
        for digest in [document["config"]["digest"], *[layer["digest"] for layer in document["layers"]]]:
            response = client.get(f"/v2/hub/library/alpine/blobs/{digest}")
            response.raise_for_status()
            received[digest] = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return received


def audit_rows(server, token: str, expected: int, timeout: float = 15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{server.url}/api/v1/audit", params={"limit": 1000},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        rows = body.get("items", body.get("rows", []))
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_two_replicas_fetch_each_cold_blob_and_manifest_once_and_serve_identical_bytes(
        upstream_registry, entrepot_server_factory, moto_s3, s3_bucket, shared_redis_url, redis_prefix, postgres_url):
    image = build_image("replicas-e2e", layers=3, layer_size=2_000_000)
    push_image(upstream_registry.url, "library/alpine", "3.19", image)
    upstream_registry.mark()
    token = secrets.token_hex(16)
    sections = {
        "database": {"url": postgres_url, "schema": f"replicas_{secrets.token_hex(3)}"},
        "storage": {"backend": "s3", "bucket": s3_bucket, "endpoint_url": moto_s3.endpoint_url},
        "redis": {"url": shared_redis_url, "key_prefix": redis_prefix},
    }
    # Replicas share the event store, so they share the key of the credentials it holds.
    env = {**S3_ENV, "ENTREPOT_SECRET_KEY": AESCipher.create_key(32), "ENTREPOT_ADMIN_TOKEN": token}
    org = [{"name": "hub", "upstream": upstream_registry.url}]
    # PostgreSQL replicas start their projection runners before answering: slow on a busy 2-core box.
    a = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)
    b = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)

    cold = concurrently(lambda: pull(a.url, image), lambda: pull(b.url, image))
    warm = concurrently(lambda: pull(a.url, image), lambda: pull(b.url, image))

    assert cold[0] == cold[1] == warm[0] == warm[1]
    assert cold[0]["manifest"] == cold[0]["manifest-bytes"] == image.manifest_digest
    for digest in image.blobs:
        assert cold[0][digest] == digest
    gets = {digest: upstream_registry.count("GET", "/blobs/" + digest) for digest in image.blobs}
    print(f"\nupstream GETs per blob: {gets}; manifest GETs: {upstream_registry.count('GET', '/manifests/')}")
    assert set(gets.values()) == {1}, gets
    assert upstream_registry.count("GET", "/manifests/") == 1  # the tag too: one upstream pull, not one per replica

    rows = audit_rows(a, token, expected=4)
    assert sorted((row["reference"], row["digest"]) for row in rows) == [("3.19", image.manifest_digest)] * 4
    # Each replica reports the lag of the projections it runs (one runner per projection across both).
    readies = [httpx.get(f"{server.url}/readyz").json() for server in (a, b)]
    print("readiness after the pulls:", readies)
    for ready in readies:
        assert (ready["status"], ready["redis"], ready["blob_storage"]) == ("ready", "ok", "ok"), ready
    assert max(ready.get("read_model_lag", 0) for ready in readies) == 0
