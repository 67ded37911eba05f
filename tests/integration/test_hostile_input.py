"""Hostile OCI input against a real `entrepot serve` and a real upstream registry: a clear 4xx, nothing stored,
no upstream contact, and no way for one client to put the upstream into back-off for everyone."""

from __future__ import annotations

import httpx
import pytest

from application.cache_records import CacheRecords
from domain.org import DEFAULTS, CacheOrg
from infra.persistence import event_store_env
from infra.settings import Settings
from tests.support.hostile import raw_request, stored_state
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
LONG = "a" * 260


def record_legacy_org(data_dir, name: str, upstream: str) -> None:
    """An org as an older release recorded it, past today's URL checks: its events outlive the rules."""
    records = CacheRecords(env=event_store_env(Settings(data_dir=str(data_dir))))
    try:
        records.save(CacheOrg(name=name, settings={**DEFAULTS.as_event(), "upstream": upstream}))
    finally:
        records.close()


@pytest.fixture(scope="module")
def lab(module_upstream_registry_factory, module_entrepot_server_factory):
    """One upstream with one image, an org on it, and an org whose upstream URL is malformed."""
    upstream = module_upstream_registry_factory()
    image = build_image("hostile", layers=1, layer_size=20_000)
    push_image(upstream.url, "team/app", "1", image)
    server = module_entrepot_server_factory(
        [{"name": "hub", "upstream": upstream.url}], sections={"upstream": {"backoff_seconds": 15}},
        startup_timeout=60)   # started twice: on a loaded machine one start takes 15-20 s
    # Today's rules refuse "http://upstream:port" in the file and the API; an org recorded before them keeps it.
    server.stop()
    record_legacy_org(server.data_dir, "broken", "http://upstream:port")
    server.start()
    warm = httpx.get(f"{server.url}/v2/hub/team/app/blobs/{image.layers[0].digest}", timeout=30)
    assert warm.status_code == 200
    assert httpx.get(f"{server.url}/v2/hub/team/app/manifests/1", timeout=30).status_code == 200

    class Lab:
        pass
    lab = Lab()
    lab.upstream, lab.image, lab.server = upstream, image, server
    lab.get = lambda target, **headers: raw_request("127.0.0.1", server.port, "GET", target, headers)
    return lab


def code(response) -> str:
    return response.json()["errors"][0]["code"]


def test_names_over_255_characters_are_name_invalid_without_asking_upstream(lab):
    lab.upstream.mark()
    for path in (f"/v2/hub/team/{LONG}/manifests/1", f"/v2/hub/team/{LONG}/tags/list",
                 f"/v2/hub/{'x/' * 130}app/manifests/1", f"/v2/hub/team/{LONG}/blobs/{lab.image.layers[0].digest}"):
        response = httpx.get(lab.server.url + path, timeout=10)
        assert response.status_code == 400 and code(response) == "NAME_INVALID", path
        assert "255" in response.json()["errors"][0]["message"]
    assert lab.upstream.requests() == []


def test_a_warm_blob_is_not_served_under_a_name_longer_than_255_characters(lab):
    digest = lab.image.layers[0].digest
    assert httpx.get(f"{lab.server.url}/v2/hub/team/app/blobs/{digest}", timeout=10).status_code == 200
    response = httpx.get(f"{lab.server.url}/v2/hub/{'t' * 200}/{'a' * 60}/blobs/{digest}", timeout=10)
    assert response.status_code == 400 and code(response) == "NAME_INVALID"


def test_many_requests_with_bad_names_do_not_put_the_upstream_into_back_off(lab):
    for _ in range(10):
        assert httpx.get(f"{lab.server.url}/v2/hub/team/{LONG}/manifests/1", timeout=10).status_code == 400
    lab.upstream.mark()
    response = httpx.get(f"{lab.server.url}/v2/hub/team/app/tags/list", timeout=10)
    assert response.status_code == 200 and response.json()["tags"] == ["1"]
    assert lab.upstream.count("GET", "/v2/team/app/tags/list") == 1   # asked: not in back-off


@pytest.mark.parametrize("path", ["/v2/hub/team%2Fapp/manifests/1", "/v2/hub/team%2fapp/manifests/1",
                                  "/v2/hub//team/app/manifests/1", "/v2//hub/team/app/manifests/1",
                                  "/v2/hub/team/app//manifests/1", "/v2/hub/team//app/blobs/sha256:" + "0" * 64,
                                  "/v2/hub/team/app/%2e%2e/manifests/1", "/v2/hub/team/%ff/manifests/1"])
def test_encoded_slashes_and_empty_path_segments_are_name_invalid_not_normalised(lab, path):
    before = stored_state(lab.server.data_dir)
    answer = lab.get(path)
    assert answer.status == 400 and answer.error_code() == "NAME_INVALID", (path, answer)
    assert stored_state(lab.server.data_dir) == before


@pytest.mark.parametrize("ns", ["127.0.0.1%0d%0aX-Injected:%20yes", "127.0.0.1%00", "127.0.0.1%23evil",
                                "127.0.0.1/x", "http://127.0.0.1", "a%20b"])
def test_an_ns_that_is_not_a_registry_host_is_refused_and_nothing_is_recorded(lab, ns):
    before = stored_state(lab.server.data_dir)
    for path in ("/v2/hub/team/app/manifests/1", "/v2/team/app/manifests/1", "/v2/hub/team/app/tags/list?n=1"):
        target = f"{path}{'&' if '?' in path else '?'}ns={ns}"
        answer = lab.get(target)
        assert answer.status == 400 and answer.error_code() == "NAME_INVALID", (target, answer)
        assert "oci-namespace" not in answer.headers and "x-injected" not in answer.headers
    assert stored_state(lab.server.data_dir) == before   # no pull recorded, nothing stored


@pytest.mark.parametrize("value, status", [("bytes=" + "9" * 5000 + "-", 416), ("bytes=0-" + "9" * 5000, 200),
                                           ("bytes=" + "9" * 5000 + "-1", 416), ("bytes=-" + "9" * 5000, 200)])
def test_range_values_with_thousands_of_digits_get_a_clear_answer(lab, value, status):
    digest = lab.image.layers[0].digest
    response = httpx.get(f"{lab.server.url}/v2/hub/team/app/blobs/{digest}", headers={"Range": value}, timeout=10)
    if status == 200:   # past the end means "to the end": the whole blob, as a 206
        assert response.status_code == 206 and response.content == lab.image.layers[0].data
    else:
        assert response.status_code == status and code(response) == "RANGE_INVALID"
    if status == 416:
        assert response.headers["content-range"] == f"bytes */{len(lab.image.layers[0].data)}"


def test_options_answers_as_a_read_only_registry(lab):
    for path in ("/v2/hub/team/app/manifests/1", "/v2/hub/team/app/blobs/sha256:" + "0" * 64, "/v2/anything",
                 "/v2/", "/v2"):
        response = httpx.options(lab.server.url + path, timeout=10)
        assert response.status_code == 405 and code(response) == "UNSUPPORTED", path
        assert response.headers["allow"] == "GET, HEAD"


def test_the_version_check_answers_head_and_refuses_writes(lab):
    for path in ("/v2/", "/v2"):
        head = httpx.head(lab.server.url + path, timeout=10)
        assert head.status_code == 200 and head.headers["docker-distribution-api-version"] == "registry/2.0"
        assert head.headers["content-length"] == "2" and head.content == b""
        post = httpx.post(lab.server.url + path, timeout=10)
        assert post.status_code == 405 and code(post) == "UNSUPPORTED"


def test_an_org_whose_upstream_url_is_malformed_answers_502_not_500(lab):
    for path in ("/v2/broken/team/app/manifests/1", "/v2/broken/team/app/tags/list",
                 "/v2/broken/team/app/blobs/sha256:" + "1" * 64):
        response = httpx.get(lab.server.url + path, timeout=10)
        assert response.status_code == 502 and code(response) == "UNAVAILABLE", (path, response.text)
        assert "invalid URL" in response.json()["errors"][0]["message"]
        head = httpx.head(lab.server.url + path, timeout=10)
        assert head.status_code == 502
