"""What may be pulled, against a real registry behind a counting proxy and a real `entrepot serve`:
allow/deny lists, the three `[server] pull_through` modes, and `entrepot prewarm`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import build_image, push_image
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration
TOKEN = "governance-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
ALPINE = build_image("governance/alpine", layers=2, layer_size=20_000)
BUSYBOX = build_image("governance/busybox", layers=1, layer_size=20_000)


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", ALPINE)
    push_image(registry.url, "library/busybox", "1.36", BUSYBOX)
    return registry


@pytest.fixture
def proxy(upstream):
    """Counts what reaches the upstream: a refusal must come before any of it."""
    with FaultProxy(upstream.url) as proxy:
        yield proxy


def serve(factory, organizations: list[dict], mode: str = "on"):
    # Counts what a client's own requests fetch: no prefetch of an image's blobs ([upstream] prefetch_blobs).
    return factory(organizations, env={"ENTREPOT_ADMIN_TOKEN": TOKEN}, server={"pull_through": mode},
                   sections={"upstream": {"prefetch_blobs": 0}}, startup_timeout=60)   # a start takes 15-20 s on a loaded 2-core machine


def asked(proxy, repository: str) -> list:
    return [request for request in proxy.requests if f"/{repository}/" in request[1]]


def get(server, path: str, **headers) -> httpx.Response:
    return httpx.get(server.url + path, headers={**ACCEPT, **headers}, timeout=30)


def denied_rows(server) -> list[dict]:
    response = httpx.get(server.url + "/api/v1/audit", params={"result": "denied"}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def entrepot(server, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENTREPOT_")}
    env.update({"ENTREPOT_URL": server.url, "ENTREPOT_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"})
    return subprocess.run([sys.executable, "-m", "interfaces.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_denied(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "DENIED" and reason in error["message"], error


def test_a_denied_repository_is_refused_before_any_upstream_contact_and_audited(proxy, entrepot_server_factory):
    server = serve(entrepot_server_factory, [{"name": "hub", "upstream": proxy.url, "deny": ["library/busy*"]}])
    assert_denied(get(server, "/v2/hub/library/busybox/manifests/1.36"), "deny pattern 'library/busy*'")
    assert_denied(get(server, f"/v2/hub/library/busybox/blobs/{BUSYBOX.layers[0].digest}"), "deny pattern")
    assert_denied(get(server, "/v2/hub/library/busybox/tags/list"), "deny pattern")
    assert asked(proxy, "busybox") == []
    assert get(server, "/v2/hub/library/alpine/manifests/3.19").status_code == 200

    [row] = denied_rows(server)
    assert (row["repository"], row["reference"], row["result"]) == ("library/busybox", "1.36", "denied")
    assert "deny pattern" in row["note"] and row["status"] == 403


def test_an_allow_list_admits_only_what_it_names(proxy, entrepot_server_factory):
    server = serve(entrepot_server_factory, [{"name": "hub", "upstream": proxy.url, "allow": ["library/alp*"]}])
    assert get(server, "/v2/hub/library/alpine/manifests/3.19").status_code == 200
    assert_denied(get(server, "/v2/hub/library/busybox/manifests/1.36"), "not in the organization's allow list")
    assert asked(proxy, "busybox") == []


def test_a_deny_added_through_the_admin_api_applies_to_cached_content_at_once(proxy, entrepot_server_factory):
    # An org made through the API (the API may change it; one of the config file it may not), on loopback,
    # which the operator allows for such orgs.
    server = entrepot_server_factory([], env={"ENTREPOT_ADMIN_TOKEN": TOKEN}, startup_timeout=60,
                                     sections={"security": {"allowed_upstream_networks": ["127.0.0.0/8"]}})
    created = httpx.post(server.url + "/api/v1/organizations", headers=AUTH, json={"name": "team", "upstream": proxy.url})
    assert created.status_code == 201, created.text
    assert get(server, "/v2/team/library/alpine/manifests/3.19").status_code == 200
    changed = httpx.patch(server.url + "/api/v1/organizations/team", headers=AUTH, json={"deny": ["library/alpine"]})
    assert changed.status_code == 200 and changed.json()["deny"] == ["library/alpine"], changed.text
    assert_denied(get(server, "/v2/team/library/alpine/manifests/3.19"), "deny pattern")


def test_with_pull_through_off_a_miss_is_refused_and_prewarm_brings_the_image_in(proxy, entrepot_server_factory):
    server = serve(entrepot_server_factory, [{"name": "hub", "upstream": proxy.url}], mode="off")
    assert_denied(get(server, "/v2/hub/library/alpine/manifests/3.19"), "pull-through is off")
    assert_denied(get(server, f"/v2/hub/library/alpine/blobs/{ALPINE.layers[0].digest}"), "pull-through is off")
    assert proxy.requests == []
    assert [row["result"] for row in denied_rows(server)] == ["denied"]

    warmed = entrepot(server, "prewarm", "hub", "library/alpine:3.19")
    assert warmed.returncode == 0, warmed.stderr
    assert "library/alpine:3.19: sha256:" in warmed.stdout and "3 blobs" in warmed.stdout
    asked_by_prewarm = len(proxy.requests)
    assert asked_by_prewarm > 0

    manifest = get(server, "/v2/hub/library/alpine/manifests/3.19")
    assert manifest.status_code == 200 and manifest.headers["X-Cache"] == "HIT"
    for layer in ALPINE.layers:
        blob = get(server, f"/v2/hub/library/alpine/blobs/{layer.digest}")
        assert blob.status_code == 200 and blob.content == layer.data
    assert_denied(get(server, "/v2/hub/library/busybox/manifests/1.36"), "pull-through is off")
    assert len(proxy.requests) == asked_by_prewarm      # serving the prewarmed image asked upstream nothing


def test_with_pull_through_allow_list_only_allowed_repositories_are_fetched_on_a_miss(proxy, entrepot_server_factory):
    server = serve(entrepot_server_factory, [{"name": "listed", "upstream": proxy.url, "allow": ["library/alpine"]},
                                             {"name": "open", "upstream": proxy.url}], mode="allow-list")
    assert get(server, "/v2/listed/library/alpine/manifests/3.19").headers["X-Cache"] == "MISS"
    before = len(proxy.requests)
    assert_denied(get(server, "/v2/open/library/busybox/manifests/1.36"), "allow-list")
    assert len(proxy.requests) == before

    answer = httpx.post(server.url + "/api/v1/organizations/open/prewarm", headers=AUTH,
                        json={"references": ["library/busybox:1.36"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["error"] == "" and result["blobs"] == 2
    assert get(server, "/v2/open/library/busybox/manifests/1.36").headers["X-Cache"] == "HIT"


def test_prewarm_refuses_bad_references_and_unknown_orgs_changing_nothing(proxy, entrepot_server_factory):
    server = serve(entrepot_server_factory, [{"name": "hub", "upstream": proxy.url}], mode="off")
    for body in ({"references": ["library/alpine"]}, {"references": []}, {"references": ["UPPER/case:1"]},
                 {"refs": ["library/alpine:3.19"]}):
        answer = httpx.post(server.url + "/api/v1/organizations/hub/prewarm", headers=AUTH, json=body)
        assert answer.status_code == 422, (body, answer.text)
    unknown = httpx.post(server.url + "/api/v1/organizations/nope/prewarm", headers=AUTH,
                         json={"references": ["library/alpine:3.19"]})
    assert unknown.status_code == 404, unknown.text
    missing = entrepot(server, "prewarm", "hub", "library/alpine:no-such-tag")
    assert missing.returncode == 1 and "library/alpine:no-such-tag: failed" in missing.stderr
    assert [request for request in proxy.requests if "alpine/blobs" in request[1]] == []
