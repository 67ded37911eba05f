"""End to end: a real nginx in front of `entrepot serve` ([storage] accel_redirect), sending warm blobs itself.

nginx runs the deployment's own config (infra/deploy/nginx/nginx.conf). Entrepôt still answers every
request: skopeo's pull is byte-for-byte the image, a warm blob GET is an `X-Accel-Redirect` that nginx
turns into the file (ranges included) with Entrepôt's headers, the bytes are counted in the metrics,
an unauthorised client gets the 401 challenge and no byte, and the internal location is unreachable
from outside.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import DirImage, skopeo_copy
from tests.support.components import require
from tests.support.images import build_image, push_image
from tests.support.nginx import ACCEL_LOCATION, Nginx

pytestmark = pytest.mark.e2e
ADMIN = "e2e-nginx-admin-token"
IMAGE = build_image("e2e-nginx/alpine", layers=2, layer_size=300_000)
LAYER = max(IMAGE.blobs, key=lambda digest: len(IMAGE.blobs[digest]))   # a layer, not the small config


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", IMAGE)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    orgs = [{"name": "hub", "upstream": upstream.url}, {"name": "private", "upstream": upstream.url,
                                                         "anonymous_pull": False}]
    return module_entrepot_server_factory(orgs, sections={"storage": {"accel_redirect": ACCEL_LOCATION}},
                                          server={"trusted_proxies": ["127.0.0.1"]},
                                          env={"ENTREPOT_ADMIN_TOKEN": ADMIN})


@pytest.fixture(scope="module")
def nginx(server, tmp_path_factory):
    require("nginx")
    with Nginx(tmp_path_factory.mktemp("nginx"), server.host, server.data_dir / "storage" / "blobs") as front:
        yield front


def blob_url(host: str, org: str, digest: str) -> str:
    return f"http://{host}/v2/{org}/library/alpine/blobs/{digest}"


def served_bytes(server, org: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "entrepot_served_bytes_total" and sample.labels == {"org": org, "kind": "blob"})


def test_skopeo_pulls_through_nginx_byte_for_byte_cold_then_warm(nginx, tmp_path):
    for attempt in ("cold", "warm"):
        skopeo_copy(f"docker://{nginx.host}/hub/library/alpine:3.19", tmp_path / attempt)
        pulled = DirImage.read(tmp_path / attempt)

        assert pulled.manifest == IMAGE.manifest_bytes
        assert pulled.blobs == IMAGE.blobs, f"{attempt}: the blobs changed on the way through nginx"


def test_a_warm_blob_is_sent_by_nginx_with_entrepots_headers_and_counted(nginx, server):
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()   # warm whatever the order of the tests
    before = served_bytes(server, "hub")

    direct = httpx.get(blob_url(server.host, "hub", digest))
    assert direct.status_code == 200 and direct.content == b""   # what nginx reads: the answer, not the bytes
    assert direct.headers["x-accel-redirect"].startswith(ACCEL_LOCATION + "sha256/")

    answer = httpx.get(blob_url(nginx.host, "hub", digest))
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-length"] == str(len(data))
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["docker-content-digest"] == digest
    assert answer.headers["x-cache"] == "HIT"
    assert answer.headers["docker-distribution-api-version"] == "registry/2.0"
    assert "x-accel-redirect" not in answer.headers
    assert served_bytes(server, "hub") - before == 2 * len(data)   # the direct answer was counted too


def test_a_range_request_is_answered_by_nginx_with_the_right_bytes(nginx):
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()

    answer = httpx.get(blob_url(nginx.host, "hub", digest), headers={"Range": "bytes=1000-4999"})

    assert answer.status_code == 206
    assert answer.content == data[1000:5000]
    assert answer.headers["content-range"] == f"bytes 1000-4999/{len(data)}"
    assert answer.headers["docker-content-digest"] == digest


def test_an_unsatisfiable_range_is_entrepots_416_not_a_file(nginx):
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()

    answer = httpx.get(blob_url(nginx.host, "hub", digest), headers={"Range": f"bytes={len(data) + 10}-"})

    assert answer.status_code == 416
    assert answer.json()["errors"][0]["code"]


def test_an_unauthorised_blob_request_is_refused_before_any_byte(nginx, server):
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()   # the file exists, published
    token = httpx.post(f"{server.url}/api/v1/organizations/private/robots", json={
        "name": "ci", "repositories": ["library/*"]}, headers={"Authorization": f"Bearer {ADMIN}"}).json()

    refused = httpx.get(blob_url(nginx.host, "private", digest))
    wrong = httpx.get(blob_url(nginx.host, "private", digest), auth=(token["username"], "not-the-token"))
    allowed = httpx.get(blob_url(nginx.host, "private", digest), auth=(token["username"], token["token"]))

    for answer in (refused, wrong):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith(("Bearer", "Basic"))
        assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert data[:64] not in answer.content
    assert allowed.status_code == 200 and allowed.content == data


def test_the_internal_location_is_not_reachable_from_outside(nginx, server):
    digest = LAYER
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()
    path = httpx.get(blob_url(server.host, "hub", digest)).headers["x-accel-redirect"]

    answer = httpx.get(f"{nginx.url}{path}")

    assert answer.status_code == 404   # passed to Entrepôt, which knows no such endpoint


def test_a_blob_deleted_from_storage_is_fetched_again_and_served_through_nginx(nginx, server):
    digest, data = min(IMAGE.blobs.items(), key=lambda item: len(item[1]))   # the config: not the other tests' layer
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()
    path = httpx.get(blob_url(server.host, "hub", digest)).headers["x-accel-redirect"]
    (server.data_dir / "storage" / "blobs" / path.removeprefix(ACCEL_LOCATION)).unlink()

    answer = httpx.get(blob_url(nginx.host, "hub", digest))

    assert answer.status_code == 200 and answer.content == data


def test_nginx_fallback_header_makes_entrepot_send_the_bytes_itself(nginx, server):
    """What nginx's `error_page 404` asks when the file vanished between our answer and its open."""
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(nginx.host, "hub", digest)).raise_for_status()

    answer = httpx.get(blob_url(server.host, "hub", digest), headers={"X-Entrepot-Accel": "off"})

    assert answer.status_code == 200 and answer.content == data
    assert "x-accel-redirect" not in answer.headers


def test_a_file_gone_before_nginx_opens_it_is_streamed_by_entrepot(server, tmp_path):
    """The reaper's race (a blob's grace period ending between our answer and nginx's open), made certain:
    an nginx whose blob directory is empty finds no file, asks Entrepôt again, and Entrepôt sends the bytes."""
    require("nginx")
    digest, data = LAYER, IMAGE.blobs[LAYER]
    httpx.get(blob_url(server.host, "hub", digest), headers={"X-Entrepot-Accel": "off"}).raise_for_status()
    (tmp_path / "empty").mkdir()

    with Nginx(tmp_path / "nginx", server.host, tmp_path / "empty") as front:
        answer = httpx.get(blob_url(front.host, "hub", digest))

    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["docker-content-digest"] == digest


def audited_clients(server) -> set[str]:
    answer = httpx.get(f"{server.url}/api/v1/audit", params={"org": "hub"}, headers={"Authorization": f"Bearer {ADMIN}"})
    return {item["client"] for item in answer.json()["items"]}


def test_the_audit_names_the_client_nginx_forwards_for_never_one_a_client_claims(nginx, server):
    manifest = "/v2/hub/library/alpine/manifests/3.19"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"}

    # From a trusted proxy's address (what nginx is), X-Forwarded-For names the client.
    httpx.get(f"{server.url}{manifest}", headers={**accept, "X-Forwarded-For": "203.0.113.7"}).raise_for_status()
    # Through nginx, a client's own X-Forwarded-For is replaced by the address nginx saw.
    httpx.get(f"{nginx.url}{manifest}", headers={**accept, "X-Forwarded-For": "203.0.113.8"}).raise_for_status()

    # Both pulls' rows, once the audit view has them (it may be a moment behind the answers).
    deadline = time.monotonic() + 10
    clients = audited_clients(server)
    while len(clients) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        clients = audited_clients(server)
    assert "203.0.113.7" in clients
    assert "203.0.113.8" not in clients and "127.0.0.1" in clients


def test_a_push_body_over_nginxs_limit_gets_the_oci_405_entrepot_gives_and_an_admin_body_a_json_413(nginx, server):
    big = b"\0" * (2 << 20)
    small = httpx.put(f"{nginx.url}/v2/hub/library/alpine/blobs/uploads/x?digest=sha256:{'0' * 64}", content=b"x")
    pushed = httpx.put(f"{nginx.url}/v2/hub/library/alpine/blobs/uploads/x?digest=sha256:{'0' * 64}", content=big)
    admin = httpx.post(f"{nginx.url}/api/v1/organizations", content=big,
                       headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})

    assert small.status_code == 405 and small.json()["errors"][0]["code"] == "UNSUPPORTED"   # Entrepôt's answer
    assert pushed.status_code == 405 and pushed.headers["content-type"].startswith("application/json")
    assert pushed.json()["errors"][0]["code"] == "UNSUPPORTED"                                # nginx's, the same
    assert pushed.headers["docker-distribution-api-version"] == "registry/2.0"
    assert admin.status_code == 413 and admin.json()["errors"][0]["code"] == "SIZE_INVALID"
