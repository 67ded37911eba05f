"""Two `entrepot serve` replicas over PostgreSQL, S3 (moto) and Redis with a quota: one evictor acts
for the cluster, each evicted blob is deleted from S3 once, and both replicas serve what is left."""

from __future__ import annotations

import secrets
from collections import Counter

import httpx
import pytest
from eventsourcing.cryptography import AESCipher

from tests.support.images import push_image
from tests.support.peers import S3_ENV
from tests.support.processes import concurrently
from tests.support.retention import REPO, http_pull as pull, image_bytes, three_images, until
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e
IMAGES = three_images("replicas-quota")


def test_two_replicas_evict_once_and_delete_each_blob_once(
        upstream_registry, entrepot_server_factory, moto_s3, s3_bucket, shared_redis_url, redis_prefix, postgres_url):
    for tag, image in IMAGES.items():
        push_image(upstream_registry.url, REPO, tag, image)
    quota = int(2.5 * max(image_bytes(image) for image in IMAGES.values()))
    proxy = TcpProxy(moto_s3.port).start()
    token = secrets.token_hex(16)
    sections = {
        "database": {"url": postgres_url, "schema": f"evict_{secrets.token_hex(3)}"},
        "storage": {"backend": "s3", "bucket": s3_bucket, "endpoint_url": proxy.url, "delete_grace_seconds": 1},
        "redis": {"url": shared_redis_url, "key_prefix": redis_prefix},
    }
    env = {**S3_ENV, "ENTREPOT_SECRET_KEY": AESCipher.create_key(32), "ENTREPOT_ADMIN_TOKEN": token}
    org = [{"name": "hub", "upstream": upstream_registry.url, "quota_bytes": quota}]
    try:
        a = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)
        b = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)
        pull(a.url, "1")
        pull(b.url, "2")
        concurrently(lambda: pull(a.url, "3"), lambda: pull(b.url, "3"))
        first = IMAGES["1"]
        gone = [digest.split(":")[1] for digest in [first.digest, *first.blobs]]
        until(lambda: not any(key.endswith(g) for key in moto_s3.keys(s3_bucket) for g in gone), timeout=60,
              what="image 1's objects to leave S3")
        deletes = Counter(path.rsplit("/", 1)[1].split("?")[0] for path in proxy.requests("DELETE"))
        assert {digest: deletes[digest] for digest in gone} == {digest: 1 for digest in gone}
        assert sum(deletes.values()) == len(gone)          # nothing else was deleted, nothing twice
        log = httpx.get(f"{a.url}/api/v1/audit/evictions?kind=eviction", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).json()["items"]
        assert [(entry["digest"], entry["reason"], entry["actor"]) for entry in log] == [
            (first.digest, "quota", "system:evictor")]
        for server in (a, b):
            for tag in ("2", "3"):
                assert set(pull(server.url, tag).values()) == set(IMAGES[tag].blobs)
    finally:
        proxy.stop()
