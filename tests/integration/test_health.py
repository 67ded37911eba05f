"""Probes: /healthz says the process answers, /readyz what each component a replica needs is doing."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from infra.settings import RedisSettings, Settings, StorageSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app

pytestmark = pytest.mark.integration


def serve(tmp_path, **settings) -> TestClient:
    return TestClient(create_app(bootstrap(Settings(data_dir=str(tmp_path / "data"), organizations=(), **settings))))


def test_an_embedded_replica_is_alive_and_ready_without_credentials(tmp_path):
    with serve(tmp_path) as api:
        assert (api.get("/healthz").status_code, api.get("/healthz").json()) == (200, {"status": "ok"})
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "event_store": "ok", "read_model": "ok", "read_model_lag": 0,
                                "blob_storage": "ok", "redis": "not configured", "quota": "ok"}


def test_a_replica_whose_bucket_is_missing_is_not_ready(tmp_path, moto_s3):
    storage = StorageSettings(backend="s3", bucket="no-such-bucket", endpoint_url=moto_s3.endpoint_url)
    with serve(tmp_path, storage=storage) as api:
        assert api.get("/healthz").status_code == 200
        ready = api.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert (body["status"], body["blob_storage"], body["event_store"]) == ("unavailable", "unavailable", "ok")
        assert "no-such-bucket" in body["errors"]["blob_storage"]


def test_a_replica_with_redis_down_is_degraded_but_ready(tmp_path, s3_bucket, moto_s3):
    storage = StorageSettings(backend="s3", bucket=s3_bucket, endpoint_url=moto_s3.endpoint_url)
    with serve(tmp_path, storage=storage, redis=RedisSettings(url="redis://127.0.0.1:1/0")) as api:
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert (ready.json()["status"], ready.json()["redis"], ready.json()["blob_storage"]) == (
            "degraded", "unavailable", "ok")
