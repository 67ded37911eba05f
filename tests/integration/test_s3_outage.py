"""Blob storage on S3 goes away and comes back: clients get 503s, never a 500 or a wrong byte, and service resumes."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient

from infra.settings import OrgSettings, Settings, StorageSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.components import require
from tests.support.images import build_image, push_image
from tests.support.peers import MOTO_SERVER, MotoS3

pytestmark = pytest.mark.integration


def test_while_s3_is_down_blobs_answer_503_and_after_it_is_back_pulls_work_again(tmp_path, upstream_registry,
                                                                                   moto_s3):
    require(MOTO_SERVER)   # moto_s3 sets the AWS variables boto3 needs; this test runs an S3 of its own to stop
    s3 = MotoS3(tmp_path).start()
    try:
        bucket = s3.new_bucket()
        image = build_image("s3-outage", layers=2, layer_size=300_000)
        push_image(upstream_registry.url, "library/alpine", "3.19", image)
        settings = Settings(data_dir=str(tmp_path / "data"),
                            organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),),
                            storage=StorageSettings(backend="s3", bucket=bucket, endpoint_url=s3.endpoint_url))
        accept = {"Accept": image.media_type}
        manifest = "/v2/hub/library/alpine/manifests/3.19"
        blobs = {digest: f"/v2/hub/library/alpine/blobs/{digest}" for digest in image.blobs}
        with TestClient(create_app(bootstrap(settings))) as api:
            assert api.get(manifest, headers=accept).content == image.manifest_bytes
            for digest, path in blobs.items():
                assert api.get(path).content == image.blobs[digest]
            # A verified blob's last bytes go out while its upload completes: stop S3 once every blob is in it,
            # so that what answers next is the store (down), not a fill still publishing.
            deadline = time.monotonic() + 10
            while not all(any(digest.split(":")[1] in key for key in stored_keys(s3, bucket)) for digest in blobs):
                assert time.monotonic() < deadline, "the blobs never reached the bucket"
                time.sleep(0.05)

            s3.stop()
            answers = [api.get(path) for path in blobs.values()]
            assert [a.status_code for a in answers] == [503] * len(blobs), [a.text[:200] for a in answers]
            assert all(a.json()["errors"][0]["code"] == "UNAVAILABLE" for a in answers)
            # The manifest bytes are held in memory: the tag is still answered, with the right bytes.
            assert api.get(manifest, headers=accept).content == image.manifest_bytes
            ready = api.get("/readyz")
            assert (ready.status_code, ready.json()["blob_storage"]) == (503, "unavailable")

            s3.start()                      # a new, empty S3 on the same port: the bucket must be made again
            s3.client().create_bucket(Bucket=bucket)
            for digest, path in blobs.items():   # fetched from upstream again, into the new bucket
                answer = api.get(path)
                assert (answer.status_code, answer.content == image.blobs[digest]) == (200, True)
            assert api.get("/readyz").json()["blob_storage"] == "ok"
    finally:
        s3.stop()


def stored_keys(s3: MotoS3, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
