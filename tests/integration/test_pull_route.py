"""Manifest and blob pulls answered past Litestar's router (interfaces/http/pull_route.py): every answer is the
one the routed handler gives, and each is counted and audited the same way."""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient

import interfaces.http.pull_route as pull_route
from infra.settings import OrgSettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    return module_upstream_registry_factory()


@pytest.fixture(scope="module")
def image(upstream):
    image = build_image("direct", layers=2, layer_size=40_000)
    push_image(upstream.url, "library/direct", "1.0", image)
    return image


@pytest.fixture
def api(tmp_path, upstream, image):
    container = bootstrap(Settings(data_dir=str(tmp_path / "data"),
                                   organizations=(OrgSettings(name="hub", upstream=upstream.url),)))
    app = create_app(container)
    with TestClient(app) as client:
        client.container, client.direct = container, app.direct_pulls
        yield client


def answered(api, method: str, path: str, headers: dict, direct: bool):
    api.app.direct_pulls = api.direct if direct else None
    try:
        response = api.request(method, path, headers=headers)
    finally:
        api.app.direct_pulls = api.direct
    return response.status_code, sorted(response.headers.multi_items()), response.content


def requests_of(image) -> list[tuple[str, str, dict]]:
    repo, layer = "/v2/hub/library/direct", image.layers[0].digest
    accept = {"Accept": ACCEPT, "User-Agent": "test"}
    return [
        ("GET", f"{repo}/manifests/1.0", accept),
        ("HEAD", f"{repo}/manifests/1.0", accept),
        ("GET", f"{repo}/manifests/{image.manifest_digest}", accept),
        ("GET", f"{repo}/blobs/{layer}", {}),
        ("HEAD", f"{repo}/blobs/{layer}", {}),
        ("GET", f"{repo}/blobs/{layer}", {"Range": "bytes=10-99"}),
        ("GET", f"{repo}/blobs/{layer}", {"Range": "bytes=999999-"}),           # 416
        ("GET", f"{repo}/manifests/nosuchtag", accept),                         # 404, audited
        ("GET", "/v2/hub/Library/direct/manifests/1.0", accept),                # 400 NAME_INVALID
        ("GET", "/v2/hub/a%2Fb/manifests/1.0", accept),                         # an encoded / is no separator
        ("GET", f"{repo}/manifests/sha256:abc", accept),                        # 400 DIGEST_INVALID
        ("GET", "/v2/nosuch/library/direct/manifests/1.0", accept),             # 404 NAME_UNKNOWN
        ("GET", f"{repo}/blobs/sha256:" + "0" * 64, {}),                        # 404 BLOB_UNKNOWN
        ("GET", "/v2/hub/manifests/1.0", accept),                               # no repository in the org
    ]


def test_each_pull_gets_the_answer_the_routed_handler_gives(api, image):
    for method, path, headers in requests_of(image):
        answered(api, method, path, headers, direct=False)   # warm: the cold answer (a MISS) comes once
        routed = answered(api, method, path, headers, direct=False)
        direct = answered(api, method, path, headers, direct=True)
        assert direct == routed, (method, path, headers)


def test_only_manifest_and_blob_gets_and_heads_take_the_direct_route(api, image, monkeypatch):
    taken = []
    real = pull_route.pull

    async def spy(request, services, rest):
        taken.append((request.method, rest))
        return await real(request, services, rest)
    monkeypatch.setattr(pull_route, "pull", spy)
    layer = image.layers[0].digest
    assert api.get("/v2/hub/library/direct/manifests/1.0", headers={"Accept": ACCEPT}).status_code == 200
    assert api.head(f"/v2/hub/library/direct/blobs/{layer}").status_code == 200
    assert api.get("/v2/hub/library/direct/tags/list").status_code == 200
    assert api.get("/v2/").status_code == 200
    assert api.put("/v2/hub/library/direct/manifests/1.0", content=b"{}").status_code == 405
    assert api.get("/v2/hub/library/direct/manifests/1.0", headers={"Host": "bad host"}).status_code == 400
    assert taken == [("GET", "/hub/library/direct/manifests/1.0"), ("HEAD", f"/hub/library/direct/blobs/{layer}")]


def requests_counted(api, method: str, route: str, status: int) -> float:
    pattern = re.compile(rf'^entrepot_http_requests_total{{[^}}]*method="{method}"[^}}]*route="{route}"'
                         rf'[^}}]*status="{status}"[^}}]*}} (\S+)$', re.M)
    match = pattern.search(api.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def test_direct_pulls_are_counted_and_audited_like_routed_ones(api, image):
    path = "/v2/hub/library/direct/manifests/1.0"
    answered(api, "GET", path, {"Accept": ACCEPT}, direct=False)
    before = requests_counted(api, "GET", "manifest", 200)
    pulls_before = api.container.pulls.recorder.max_notification_id()
    for direct in (False, True, True):
        assert answered(api, "GET", path, {"Accept": ACCEPT}, direct=direct)[0] == 200
    assert requests_counted(api, "GET", "manifest", 200) == before + 3
    assert api.container.pulls.recorder.max_notification_id() == pulls_before + 3
