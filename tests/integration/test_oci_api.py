"""The OCI pull API against a real upstream registry, through the app built by the composition root."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from infra.settings import OrgSettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from infra.projection_runtime import open_view
from tests.support.httpserver import LocalHTTPServer, Reply
from tests.support.images import build_image, build_index, push_image, put_manifest, sha256
from tests.support.views import wait_for_rows

pytestmark = pytest.mark.integration
ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"])


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    """One registry for the module: each test pulls through an app of its own, and what a test
    pushes goes to a repository or tag no other test reads."""
    return module_upstream_registry_factory()


@pytest.fixture(scope="module")
def image(upstream):
    image = build_image("api", layers=2, layer_size=50_000)
    push_image(upstream.url, "library/alpine", "3.19", image)
    return image


def serve(tmp_path, *orgs: OrgSettings):
    container = bootstrap(Settings(data_dir=str(tmp_path / "data"), organizations=orgs))
    return container, TestClient(create_app(container))


@pytest.fixture
def api(tmp_path, upstream, image):
    container, client = serve(tmp_path, OrgSettings(name="hub", upstream=upstream.url))
    with client:
        client.container = container
        yield client


def audit_rows(container: Container, count: int, timeout: float = 5.0):
    view = open_view("audit", container.env)
    try:
        return wait_for_rows(view, count, timeout)
    finally:
        view.close()


def error_code(response) -> str:
    return response.json()["errors"][0]["code"]


def test_api_version_endpoint_answers_with_the_registry_header(api):
    for path in ("/v2/", "/v2"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_manifest_by_tag_is_a_miss_then_a_hit_with_the_upstream_bytes_and_headers(api, image):
    first = api.get("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT})
    second = api.get("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT})
    for response, cache in ((first, "MISS"), (second, "HIT")):
        assert response.status_code == 200
        assert response.content == image.manifest_bytes
        assert response.headers["x-cache"] == cache
        assert response.headers["docker-content-digest"] == image.manifest_digest
        assert response.headers["content-type"] == image.media_type
        assert response.headers["content-length"] == str(len(image.manifest_bytes))
    rows = audit_rows(api.container, 2)
    assert [(r.reference, r.result, r.digest) for r in rows] == [
        ("3.19", "miss", image.manifest_digest), ("3.19", "hit", image.manifest_digest)]
    assert rows[0].user_agent and rows[0].client


def test_head_of_a_manifest_has_the_headers_and_no_body_and_is_not_a_pull(api, image):
    response = api.head("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT})
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(len(image.manifest_bytes))
    assert response.headers["docker-content-digest"] == image.manifest_digest
    api.get(f"/v2/hub/library/alpine/manifests/{image.manifest_digest}")
    rows = audit_rows(api.container, 1)
    assert [r.reference for r in rows] == [image.manifest_digest]


def test_a_multi_arch_index_and_its_platform_manifests_keep_their_digests(api, upstream):
    index = build_index("api-multi")
    push_image(upstream.url, "library/multi", "1", index)
    top = api.get("/v2/hub/library/multi/manifests/1", headers={"Accept": ACCEPT})
    assert top.content == index.manifest_bytes and top.headers["content-type"] == index.media_type
    for child in index.children:
        response = api.get(f"/v2/hub/library/multi/manifests/{child.manifest_digest}", headers={"Accept": ACCEPT})
        assert response.content == child.manifest_bytes
        assert response.headers["docker-content-digest"] == child.manifest_digest


def test_blobs_are_streamed_on_a_miss_and_served_from_storage_afterwards(api, image):
    for layer in image.layers:
        first = api.get(f"/v2/hub/library/alpine/blobs/{layer.digest}")
        second = api.get(f"/v2/hub/library/alpine/blobs/{layer.digest}")
        assert first.content == second.content == layer.data
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.headers["content-length"] == str(len(layer.data))
        assert second.headers["docker-content-digest"] == layer.digest


def test_blob_ranges_answer_206_and_unsatisfiable_ranges_416(api, image):
    layer = image.layers[0]
    url = f"/v2/hub/library/alpine/blobs/{layer.digest}"
    api.get(url)
    cases = {"bytes=0-9": (0, 10), "bytes=100-": (100, len(layer.data)), "bytes=-20": (len(layer.data) - 20, len(layer.data))}
    for header, (start, end) in cases.items():
        response = api.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == layer.data[start:end]
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(layer.data)}"
    beyond = api.get(url, headers={"Range": f"bytes={len(layer.data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(layer.data)}"
    assert error_code(beyond) == "RANGE_INVALID"
    for unusable in ("lines=1-2", "bytes=500-0", "bytes=0-1,5-6"):   # conformance: "range 500-0" is a 416
        refused = api.get(url, headers={"Range": unusable})
        assert refused.status_code == 416, unusable
        assert refused.headers["content-range"] == f"bytes */{len(layer.data)}" and error_code(refused) == "RANGE_INVALID"


def test_a_range_on_a_cold_blob_is_served_from_the_fill(api, image):
    layer = image.layers[1]
    response = api.get(f"/v2/hub/library/alpine/blobs/{layer.digest}", headers={"Range": "bytes=5-14"})
    assert response.status_code == 206 and response.content == layer.data[5:15]


def test_tag_list_pages_with_n_and_last(api, upstream, image):
    for tag in ("a", "b", "c"):   # the only test that adds tags to library/alpine
        put_manifest(upstream.url, "library/alpine", tag, image.manifest_bytes, image.media_type)
    everything = api.get("/v2/hub/library/alpine/tags/list").json()
    assert everything == {"name": "hub/library/alpine", "tags": ["3.19", "a", "b", "c"]}
    page = api.get("/v2/hub/library/alpine/tags/list?n=2")
    assert page.json()["tags"] == ["3.19", "a"]
    assert page.headers["link"] == '</v2/hub/library/alpine/tags/list?n=2&last=a>; rel="next"'
    assert api.get("/v2/hub/library/alpine/tags/list?n=2&last=a").json()["tags"] == ["b", "c"]
    assert api.get("/v2/hub/library/alpine/tags/list?n=x").status_code == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_unsupported_on_a_read_only_cache(api, method, image):
    for path in ("/v2/hub/library/alpine/manifests/3.19", "/v2/hub/library/alpine/blobs/uploads/",
                 f"/v2/hub/library/alpine/blobs/{image.layers[0].digest}"):
        response = api.request(method, path, content=b"{}")
        assert response.status_code == 405, path
        assert error_code(response) == "UNSUPPORTED"


@pytest.mark.parametrize("path, status, code", [
    ("/v2/hub/Library/alpine/manifests/3.19", 400, "NAME_INVALID"),
    ("/v2/hub/library/alpine/manifests/-bad", 400, "TAG_INVALID"),
    ("/v2/hub/library/alpine/manifests/sha256:abc", 400, "DIGEST_INVALID"),
    ("/v2/hub/library/alpine/blobs/md5:" + "0" * 32, 400, "DIGEST_INVALID"),
    ("/v2/hub/library/alpine/blobs/latest", 400, "DIGEST_INVALID"),
    ("/v2/nosuch/library/alpine/manifests/3.19", 404, "NAME_UNKNOWN"),
    ("/v2/hub/library/alpine/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
    ("/v2/hub/manifests/3.19", 400, "NAME_INVALID"),
])
def test_bad_requests_get_an_oci_error_and_change_nothing(api, path, status, code):
    head_before = api.container.records.recorder.max_notification_id()
    response = api.get(path)
    assert (response.status_code, error_code(response)) == (status, code)
    assert api.container.records.recorder.max_notification_id() == head_before
    assert api.container.pulls.recorder.max_notification_id() is None


def test_a_missing_tag_gets_manifest_unknown_caches_nothing_and_is_recorded_as_a_failed_pull(api):
    head_before = api.container.records.recorder.max_notification_id()
    response = api.get("/v2/hub/library/alpine/manifests/nosuchtag")
    assert (response.status_code, error_code(response)) == (404, "MANIFEST_UNKNOWN")
    assert api.container.records.recorder.max_notification_id() == head_before
    [recorded] = [api.container.pulls.mapper.to_domain_event(n)
                  for n in api.container.pulls.recorder.select_notifications(start=1, limit=10)]
    assert (recorded.reference, recorded.result, recorded.status, recorded.error_code) == (
        "nosuchtag", "error", 404, "MANIFEST_UNKNOWN")


def test_a_manifest_over_4_mib_is_refused_and_not_stored(tmp_path, image):
    # distribution refuses to store such a manifest, so a scripted upstream serves it
    big = json.loads(image.manifest_bytes)
    big["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    data = json.dumps(big).encode()
    reply = Reply(200, {"Content-Type": image.media_type, "Docker-Content-Digest": sha256(data)}, data)
    with LocalHTTPServer(lambda request, server: reply) as upstream:
        container, client = serve(tmp_path, OrgSettings(name="hub", upstream=upstream.url))
        with client:
            response = client.get("/v2/hub/library/big/manifests/1")
            assert response.status_code == 502 and error_code(response) == "MANIFEST_INVALID"
            assert container.store.local_path(sha256(data)) is None
            assert container.records.recorder.max_notification_id() == 1  # only the org's registration


def test_an_upstream_with_basic_auth_is_pulled_with_the_orgs_credentials(tmp_path, upstream_registry_with_auth):
    image = build_image("auth")
    push_image(upstream_registry_with_auth.url, "team/app", "1", image, auth=("alice", "s3cret"))
    container, client = serve(
        tmp_path, OrgSettings(name="good", upstream=upstream_registry_with_auth.url, username="alice", password="s3cret"),
        OrgSettings(name="bad", upstream=upstream_registry_with_auth.url, username="alice", password="wrong"))
    with client:
        good = client.get("/v2/good/team/app/manifests/1")
        assert good.content == image.manifest_bytes, good.text
        assert client.get(f"/v2/good/team/app/blobs/{image.layers[0].digest}").content == image.layers[0].data
        refused = client.get("/v2/bad/team/app/manifests/1")
        assert refused.status_code == 502 and error_code(refused) == "DENIED"


def test_upstream_passwords_are_not_stored_in_plaintext(tmp_path, upstream_registry_with_auth):
    container, client = serve(tmp_path, OrgSettings(name="good", upstream=upstream_registry_with_auth.url,
                                                    username="alice", password="pa55-secret-word"))
    with client:
        client.get("/v2/")
    for path in (tmp_path / "data").rglob("*.db*"):
        assert b"pa55-secret-word" not in path.read_bytes(), path


def test_a_blob_cached_through_one_org_is_not_served_through_an_org_whose_upstream_lacks_it(
        tmp_path, upstream_registry_factory):
    holder, empty = upstream_registry_factory(), upstream_registry_factory()
    image = build_image("isolation")
    push_image(holder.url, "team/app", "1", image)
    layer = image.layers[0]
    container, client = serve(tmp_path, OrgSettings(name="a", upstream=holder.url),
                              OrgSettings(name="b", upstream=empty.url), OrgSettings(name="c", upstream=holder.url))
    with client:
        assert client.get(f"/v2/a/team/app/blobs/{layer.digest}").content == layer.data
        refused = client.get(f"/v2/b/team/app/blobs/{layer.digest}")
        assert refused.status_code == 404 and error_code(refused) == "BLOB_UNKNOWN"
        holder.mark()
        shared = client.get(f"/v2/c/team/app/blobs/{layer.digest}")
        assert shared.content == layer.data and shared.headers["x-cache"] == "HIT"
        assert holder.count("HEAD", layer.digest) == 1 and holder.count("GET", layer.digest) == 0
        assert container.records.holds_blob("c", layer.digest)
