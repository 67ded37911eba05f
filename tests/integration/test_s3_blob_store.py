"""S3 blob storage beyond the shared contract: upload while streaming, verify before completing, redirects."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import httpx
import pytest
from litestar.testing import TestClient

from application.errors import UpstreamBadContent
from application.fills import BlobFills
from application.ports import UpstreamTarget
from infra.clock import SystemClock
from infra.settings import OrgSettings, Settings, StorageSettings
from infra.storage import FilesystemBlobStore, S3BlobStore, build_blob_store
from infra.storage.s3 import MIN_PART_SIZE
from infra.upstream import HttpUpstream
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.httpserver import LocalHTTPServer, Reply
from tests.support.images import build_image, push_image, sha256

pytestmark = pytest.mark.integration
BIG = MIN_PART_SIZE + MIN_PART_SIZE // 5      # one full part and a small last one


def big_blob(seed: int = 1) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(BIG)
    return sha256(data), data


def blob_upstream(data: bytes, gate: threading.Event | None = None, pause_at: int = 0) -> LocalHTTPServer:
    """An upstream that sends `data` for any blob, pausing after `pause_at` bytes until `gate` opens."""
    def handler(request, server) -> Reply:
        def chunks():
            yield data[:pause_at]
            if gate is not None:
                gate.wait(30)
            yield data[pause_at:]
        return Reply(200, {"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"},
                     chunks=chunks())
    return LocalHTTPServer(handler).start()


def s3_store(moto, bucket: str, tmp_path) -> S3BlobStore:
    return S3BlobStore(bucket=bucket, endpoint_url=moto.endpoint_url, spool_dir=str(tmp_path / "spool"),
                       part_size=MIN_PART_SIZE)


class NoLedger:
    """These tests look at storage only: what the fills report is not kept (as the no-op callback did)."""

    async def blob_cached(self, *_args, **_kwargs) -> None:
        pass

    async def blob_corrupt(self, *_args) -> None:
        pass


async def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
    return result


def test_a_cold_blob_streams_to_clients_while_its_parts_upload_and_completes_only_once_verified(
        moto_s3, s3_bucket, tmp_path):
    digest, data = big_blob()
    gate = threading.Event()
    upstream_server = blob_upstream(data, gate, pause_at=MIN_PART_SIZE + 100_000)
    store = s3_store(moto_s3, s3_bucket, tmp_path)
    key = store.key(digest)

    async def scenario():
        upstream = HttpUpstream()
        fills = BlobFills(store, upstream, NoLedger(), SystemClock())
        try:
            fill = await fills.join(UpstreamTarget("hub", upstream_server.url, "library/big"), digest)
            received = bytearray()

            async def client():
                async for chunk in fill.read(0, fill.size):
                    received.extend(chunk)
            reading = asyncio.create_task(client())

            # Upstream has paused past one part: the client has those bytes, S3 has the part, and
            # the object does not exist yet.
            async def client_has_a_part() -> bool:
                return len(received) >= MIN_PART_SIZE
            await eventually(client_has_a_part)
            uploads = await eventually(lambda: asyncio.to_thread(
                lambda: [u for u in moto_s3.uploads(s3_bucket) if u["Key"] == key]))
            parts = await eventually(lambda: asyncio.to_thread(lambda: moto_s3.client().list_parts(
                Bucket=s3_bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts")))
            assert [p["Size"] for p in parts] == [MIN_PART_SIZE]
            assert await store.stat(digest) is None
            assert not reading.done()

            gate.set()
            await reading
            assert bytes(received) == data
            # The client's last bytes go out once verified; the upload completes meanwhile.
            async def completed() -> bool:
                return await store.stat(digest) == len(data)
            await eventually(completed)
            assert await store.get_bytes(digest) == data
        finally:
            await upstream.aclose()

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        upstream_server.stop()
    assert moto_s3.uploads(s3_bucket) == []
    assert [r.method for r in upstream_server.requests if "/blobs/" in r.path] == ["GET"]


def test_a_blob_that_fails_verification_aborts_its_upload_and_leaves_nothing(moto_s3, s3_bucket, tmp_path):
    digest, data = big_blob(seed=2)
    corrupt = data[:-1] + bytes([data[-1] ^ 0xFF])
    upstream_server = blob_upstream(corrupt)
    store = s3_store(moto_s3, s3_bucket, tmp_path)

    async def scenario():
        upstream = HttpUpstream()
        fills = BlobFills(store, upstream, NoLedger(), SystemClock())
        received = bytearray()
        try:
            with pytest.raises(UpstreamBadContent):
                fill = await fills.join(UpstreamTarget("hub", upstream_server.url, "library/big"), digest)
                async for chunk in fill.read(0, fill.size):
                    received.extend(chunk)
        finally:
            await upstream.aclose()
        assert len(received) < len(data)  # never received whole
        assert await store.stat(digest) is None

    try:
        asyncio.run(scenario())
    finally:
        upstream_server.stop()
    assert moto_s3.uploads(s3_bucket) == []
    assert moto_s3.keys(s3_bucket) == []


def test_storage_is_chosen_by_name_in_settings(moto_s3, s3_bucket, tmp_path):
    assert isinstance(build_blob_store(Settings(data_dir=str(tmp_path / "a"))), FilesystemBlobStore)
    store = build_blob_store(Settings(data_dir=str(tmp_path / "b"), storage=StorageSettings(
        backend="s3", bucket=s3_bucket, endpoint_url=moto_s3.endpoint_url, prefix="cache/")))
    assert isinstance(store, S3BlobStore)
    digest = sha256(b"x")
    asyncio.run(store.put_bytes(digest, b"x"))
    assert moto_s3.keys(s3_bucket) == [f"cache/blobs/sha256/{digest.removeprefix('sha256:')}"]


@pytest.fixture
def image(upstream_registry):
    image = build_image("s3", layers=1, layer_size=200_000)
    push_image(upstream_registry.url, "library/alpine", "3.19", image)
    return image


def serve_on_s3(tmp_path, upstream_registry, moto, bucket: str, redirect: bool) -> TestClient:
    settings = Settings(data_dir=str(tmp_path / "data"),
                        organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),),
                        storage=StorageSettings(backend="s3", bucket=bucket, endpoint_url=moto.endpoint_url,
                                                redirect=redirect))
    return TestClient(create_app(bootstrap(settings)))


def test_a_warm_blob_is_a_307_to_a_presigned_url_that_serves_its_bytes(tmp_path, upstream_registry, image,
                                                                        moto_s3, s3_bucket):
    layer = image.layers[0]
    path = f"/v2/hub/library/alpine/blobs/{layer.digest}"
    with serve_on_s3(tmp_path, upstream_registry, moto_s3, s3_bucket, redirect=True) as api:
        cold = api.get(path, follow_redirects=False)
        assert (cold.status_code, cold.headers["x-cache"], cold.content) == (200, "MISS", layer.data)
        warm = api.get(path, follow_redirects=False)
        deadline = time.monotonic() + 10
        while warm.status_code == 200 and time.monotonic() < deadline:
            # Verified, its upload still completing: served whole from the fill (a hit) until published.
            assert (warm.headers["x-cache"], warm.content) == ("HIT", layer.data)
            time.sleep(0.05)
            warm = api.get(path, follow_redirects=False)
        assert warm.status_code == 307 and warm.headers["docker-content-digest"] == layer.digest
        location = warm.headers["location"]
        assert "X-Amz-Signature=" in location and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location  # SigV4
        fetched = httpx.get(location)
        assert fetched.status_code == 200 and fetched.content == layer.data
        ranged = httpx.get(location, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == layer.data[10:20]
        head = api.head(path)  # HEAD answers itself: clients read the size from it
        assert head.status_code == 200 and head.headers["content-length"] == str(layer.size)
    assert upstream_registry.count("GET", "/blobs/" + layer.digest) == 1


def test_without_redirect_a_warm_blob_is_proxied_from_s3_with_ranges(tmp_path, upstream_registry, image,
                                                                      moto_s3, s3_bucket):
    layer = image.layers[0]
    path = f"/v2/hub/library/alpine/blobs/{layer.digest}"
    with serve_on_s3(tmp_path, upstream_registry, moto_s3, s3_bucket, redirect=False) as api:
        assert api.get(path).content == layer.data
        warm = api.get(path, follow_redirects=False)
        assert (warm.status_code, warm.headers["x-cache"], warm.content) == (200, "HIT", layer.data)
        ranged = api.get(path, headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206 and ranged.content == layer.data[1000:2000]
        manifest = api.get("/v2/hub/library/alpine/manifests/3.19",
                           headers={"Accept": image.media_type})
        assert manifest.content == image.manifest_bytes
    assert upstream_registry.count("GET", "/blobs/" + layer.digest) == 1
