"""The whole app on PostgreSQL: the composition root built from `[database] url`, pulling from a real registry."""

from __future__ import annotations


import pytest
from litestar.testing import TestClient

from infra.settings import DatabaseSettings, OrgSettings, Settings, UpstreamSettings
from interfaces.bootstrap import Container, bootstrap, projection_status
from interfaces.http.app import create_app
from infra.projection_runtime import open_view
from tests.support.images import build_image, push_image
from tests.support.views import wait_for_rows

pytestmark = pytest.mark.integration
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def test_pulls_through_the_app_on_postgresql_are_served_recorded_and_projected(postgres_url, upstream_registry,
                                                                                tmp_path):
    image = build_image("pg-api", layers=2, layer_size=40_000)
    push_image(upstream_registry.url, "library/alpine", "3.19", image)
    settings = Settings(data_dir=str(tmp_path / "data"), secret_key="",
                        organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),),
                        database=DatabaseSettings(url=postgres_url, schema="app"),
                        upstream=UpstreamSettings(prefetch_blobs=0))   # a blob's first GET is a miss
    container = bootstrap(settings)
    assert container.env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    with TestClient(create_app(container)) as client:
        first = client.get("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT})
        second = client.get("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT})
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.content == second.content == image.manifest_bytes
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")   # the hit read the PG views
        layer = image.layers[0]
        blob = client.get(f"/v2/hub/library/alpine/blobs/{layer.digest}")
        again = client.get(f"/v2/hub/library/alpine/blobs/{layer.digest}")
        assert blob.content == again.content == layer.data
        assert (blob.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
        audit = open_view("audit", container.env)
        try:
            rows = wait_for_rows(audit, 2)
        finally:
            audit.close()
        assert [(r.result, r.digest) for r in rows] == [("miss", image.manifest_digest), ("hit", image.manifest_digest)]
        container.runners.wait_caught_up(timeout=10)
        assert {s.state for s in container.runners.status()} == {"running"}
    rows = projection_status(settings)
    assert rows and all(row["lag"] == 0 and row["state"] == "stopped" for row in rows)
    assert {row["projection"] for row in rows if row["head"] > 0} >= {"tags", "manifests", "blobs", "audit"}
