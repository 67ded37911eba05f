"""Client modes on the OCI API: explicit org paths, containerd's ?ns=, and root paths through the default org."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from infra.settings import OrgSettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
ALPINE = build_image("routing/alpine", layers=1, layer_size=10_000)


@pytest.fixture
def upstream(upstream_registry):
    push_image(upstream_registry.url, "library/alpine", "3.19", ALPINE)
    push_image(upstream_registry.url, "team/app", "1.0", ALPINE)
    return upstream_registry


def serve(tmp_path, *orgs: OrgSettings) -> TestClient:
    return TestClient(create_app(bootstrap(Settings(data_dir=str(tmp_path / "data"), organizations=orgs))))


def code_of(response) -> str:
    return response.json()["errors"][0]["code"]


def test_root_paths_as_the_docker_daemon_sends_them_go_to_the_default_org(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("hub", upstream.url, default=True), OrgSettings("other", "http://127.0.0.1:1")) as api:
        manifest = api.get("/v2/library/alpine/manifests/3.19", headers=ACCEPT)
        blob = api.get(f"/v2/library/alpine/blobs/{ALPINE.layers[0].digest}")
        tags = api.get("/v2/library/alpine/tags/list")

    assert manifest.status_code == 200 and manifest.content == ALPINE.manifest_bytes
    assert blob.status_code == 200 and blob.content == ALPINE.layers[0].data
    assert tags.json() == {"name": "library/alpine", "tags": ["3.19"]}
    assert "oci-namespace" not in manifest.headers


def test_a_first_path_component_naming_an_org_wins_over_the_default(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("hub", "http://127.0.0.1:1", default=True), OrgSettings("team", upstream.url,
                                                                                            namespace="team")) as api:
        response = api.get("/v2/team/app/manifests/1.0", headers=ACCEPT)

    assert response.status_code == 200 and response.content == ALPINE.manifest_bytes


def test_root_paths_without_a_default_org_are_name_unknown(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("hub", upstream.url)) as api:
        response = api.get("/v2/library/alpine/manifests/3.19", headers=ACCEPT)

    assert (response.status_code, code_of(response)) == (404, "NAME_UNKNOWN")


def test_containerd_ns_routes_to_the_org_of_that_upstream_host_and_is_answered_with_oci_namespace(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("elsewhere", "http://127.0.0.1:1", default=True),
               OrgSettings("local", upstream.url)) as api:
        ns = {"ns": upstream.host}
        head = api.head("/v2/library/alpine/manifests/3.19", params=ns, headers=ACCEPT)
        manifest = api.get(f"/v2/library/alpine/manifests/{ALPINE.manifest_digest}", params=ns, headers=ACCEPT)
        blob = api.get(f"/v2/library/alpine/blobs/{ALPINE.config.digest}", params=ns)
        tags = api.get("/v2/library/alpine/tags/list", params={**ns, "n": 0})

    for response in (head, manifest, blob, tags):
        assert response.status_code == 200
        assert response.headers["oci-namespace"] == upstream.host
    assert head.headers["docker-content-digest"] == ALPINE.manifest_digest
    assert manifest.content == ALPINE.manifest_bytes and blob.content == ALPINE.config.data
    assert tags.json()["name"] == "library/alpine"


def test_ns_selects_a_namespace_org_and_strips_its_namespace(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("lib", upstream.url, namespace="library")) as api:
        response = api.get("/v2/library/alpine/manifests/3.19", params={"ns": upstream.host}, headers=ACCEPT)
        outside = api.get("/v2/team/app/manifests/1.0", params={"ns": upstream.host}, headers=ACCEPT)

    assert response.status_code == 200 and response.content == ALPINE.manifest_bytes
    assert (outside.status_code, code_of(outside)) == (404, "NAME_UNKNOWN")


def test_an_ns_that_no_org_mirrors_is_name_unknown_and_never_falls_back_to_the_default(tmp_path, upstream):
    with serve(tmp_path, OrgSettings("hub", upstream.url, default=True)) as api:
        response = api.get("/v2/library/alpine/manifests/3.19", params={"ns": "quay.io"}, headers=ACCEPT)

    assert (response.status_code, code_of(response)) == (404, "NAME_UNKNOWN")
    assert "quay.io" in response.json()["errors"][0]["message"]
