"""The admin HTTP API (organizations, audit log) through the app built by the composition root."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time

import pytest
from litestar.testing import TestClient

from infra.settings import SecuritySettings, Settings, UpstreamSettings, load_settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
ALPINE = build_image("admin/alpine", layers=2, layer_size=20_000)
BUSYBOX = build_image("admin/busybox", layers=1, layer_size=20_000)


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    """One registry for the module: the tests only pull from it, each through an app of its own."""
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", ALPINE)
    push_image(registry.url, "library/busybox", "1.36", BUSYBOX)
    return registry


@pytest.fixture
def api(tmp_path, upstream):
    # hub is created through the API: the API may change it (an org of the config file it may not).
    # It uses the loopback registry: the operator allows loopback for orgs made through the API.
    settings = Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN, organizations=(),
                        security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)),
                        upstream=UpstreamSettings(prefetch_blobs=0))   # counts the blobs its pulls bring in
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        client.headers.update(AUTH)
        created = client.post("/api/v1/organizations", json={"name": "hub", "upstream": upstream.url,
                                                             "username": "bob", "password": "hunter2"})
        assert created.status_code == 201, created.text
        client.container = container
        client.upstream = upstream
        yield client


def error_of(response) -> dict:
    return response.json()["error"]


def events(api) -> tuple:
    return (api.container.records.recorder.max_notification_id(),
            api.container.credentials.recorder.max_notification_id())


def pull(api, org_path: str, tag: str, user_agent: str = "podman/4.3.1") -> None:
    response = api.get(f"/v2/{org_path}/manifests/{tag}", headers={**ACCEPT, "User-Agent": user_agent})
    assert response.status_code == 200, response.text


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def audit(api, **params) -> dict:
    response = api.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- authentication --------------------------------------------------------------------------------
ENDPOINTS = [("GET", "/api/v1/organizations"), ("POST", "/api/v1/organizations"),
             ("GET", "/api/v1/organizations/hub"), ("PUT", "/api/v1/organizations/hub"),
             ("PATCH", "/api/v1/organizations/hub"), ("DELETE", "/api/v1/organizations/hub"),
             ("GET", "/api/v1/audit")]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
                         ids=["no-token", "wrong-token", "not-bearer"])
def test_every_admin_endpoint_refuses_a_request_without_the_admin_token(api, headers):
    before = events(api)
    for method, path in ENDPOINTS:
        response = api.request(method, path, headers={"Authorization": "", **headers},
                               json={"name": "x", "upstream": "http://127.0.0.1:1"})
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert events(api) == before


def test_a_generated_admin_token_is_kept_in_the_data_dir_readable_only_by_its_owner(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), admin_token="")
    first = bootstrap(settings)
    second = bootstrap(settings)
    path = tmp_path / "data" / "admin.token"

    assert first.admin_token_generated and not second.admin_token_generated
    assert first.admin_token == second.admin_token == path.read_text().strip()
    assert len(first.admin_token) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- organizations ---------------------------------------------------------------------------------
def test_organizations_are_listed_with_their_settings_but_never_a_password(api):
    response = api.get("/api/v1/organizations")

    assert response.status_code == 200
    [hub] = response.json()["organizations"]
    assert hub["name"] == "hub" and hub["upstream"] == api.upstream.url
    assert hub["username"] == "bob" and hub["password_set"] is True
    assert "hunter2" not in response.text and "password" not in hub


def test_an_organization_created_through_the_api_is_listed_shown_and_pulled_from_at_once(api):
    response = api.post("/api/v1/organizations", json={"name": "mirror", "upstream": api.upstream.url,
                                                        "staleness_seconds": 60})
    assert response.status_code == 201, response.text
    assert response.json()["staleness_seconds"] == 60 and response.json()["password_set"] is False
    assert [org["name"] for org in api.get("/api/v1/organizations").json()["organizations"]] == ["hub", "mirror"]

    pull(api, "mirror/library/alpine", "3.19")
    pull(api, "mirror/library/alpine", "3.19")
    blob = api.get(f"/v2/mirror/library/alpine/blobs/{ALPINE.layers[0].digest}")
    assert blob.status_code == 200

    # The blob and the pulls reach their views through two logs, each read up to 0.1 s after its commits.
    shown = wait_for(lambda: (body := api.get("/api/v1/organizations/mirror").json())["blob_count"]
                     and sum(body["pulls"].values()) == 2 and body)
    assert shown["organization"]["name"] == "mirror"
    assert (shown["tag_count"], shown["repository_count"]) == (1, 1)
    tags = api.get("/api/v1/organizations/mirror/tags").json()
    assert tags == {"items": [{"repository": "library/alpine", "tag": "3.19", "digest": ALPINE.manifest_digest,
                               "media_type": ALPINE.media_type, "checked_at": tags["items"][0]["checked_at"]}],
                    "next_cursor": None}
    # bytes_stored is what the quota counts (issue 10): the distinct manifest, config and layers the
    # org's cached images reference, at their declared sizes; blob_count counts the blobs fetched so far.
    referenced = len(ALPINE.manifest_bytes) + sum(len(data) for data in ALPINE.blobs.values())
    assert shown["bytes_stored"] == referenced and shown["blob_count"] == 1
    assert shown["pulls"] == {"hit": 1, "miss": 1}
    assert shown["upstream_rate_limit"] is None


def test_creating_an_existing_organization_is_a_conflict_and_changes_nothing(api):
    before = events(api)
    response = api.post("/api/v1/organizations", json={"name": "hub", "upstream": "http://127.0.0.1:1"})

    assert response.status_code == 409
    assert error_of(response)["code"] == "conflict" and "hub" in error_of(response)["message"]
    assert events(api) == before
    assert api.get("/api/v1/organizations/hub").json()["organization"]["upstream"] == api.upstream.url


@pytest.mark.parametrize("body, field", [
    ({"name": "new", "upstream": "ftp://x"}, "upstream"),
    ({"name": "new", "upstream": ""}, "upstream"),
    ({"name": "new", "upstream": "http://h", "staleness_seconds": -1}, "staleness_seconds"),
    ({"name": "new", "upstream": "http://h", "max_stale_seconds": "1 week"}, "max_stale_seconds"),
    ({"name": "new", "upstream": "http://h", "namespace": "Not/Valid"}, "namespace"),
    ({"name": "new", "upstream": "http://h", "on_upstream_denied": "panic"}, "on_upstream_denied"),
    ({"name": "New Org", "upstream": "http://h"}, "name"),
    ({"name": "a/b", "upstream": "http://h"}, "name"),
    ({"name": "new"}, "upstream"),
    ({"name": "new", "upstream": "http://h", "colour": "blue"}, "colour"),
    ({"name": "new", "upstream": "http://h", "default": "yes"}, "default"),
])
def test_invalid_organization_bodies_get_422_naming_the_field_and_change_nothing(api, body, field):
    before = events(api)
    response = api.post("/api/v1/organizations", json=body)

    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid"
    assert field in error_of(response)["fields"], error_of(response)
    assert events(api) == before


def test_a_body_that_is_not_json_is_a_bad_request(api):
    response = api.post("/api/v1/organizations", content=b"{name: hub", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_unknown_organizations_get_404_on_show_update_and_delete(api):
    before = events(api)
    for method, body in (("GET", None), ("PUT", {"upstream": "http://h"}), ("PATCH", {"staleness_seconds": 1}),
                         ("DELETE", None)):
        response = api.request(method, "/api/v1/organizations/nosuch", json=body)
        assert response.status_code == 404, method
        assert error_of(response)["code"] == "not_found"
    assert events(api) == before


def test_patch_changes_only_the_given_settings_and_keeps_the_password(api):
    response = api.patch("/api/v1/organizations/hub", json={"staleness_seconds": 5, "namespace": "library"})

    assert response.status_code == 200, response.text
    hub = response.json()
    assert (hub["staleness_seconds"], hub["namespace"], hub["upstream"]) == (5, "library", api.upstream.url)
    assert hub["password_set"] is True and api.container.orgs.get("hub").password == "hunter2"
    pull(api, "hub/alpine", "3.19")   # the namespace applies at once: hub/alpine is library/alpine upstream


def test_put_replaces_every_setting_and_an_empty_password_clears_it(api):
    api.patch("/api/v1/organizations/hub", json={"staleness_seconds": 5})
    response = api.put("/api/v1/organizations/hub", json={"upstream": api.upstream.url, "password": ""})

    assert response.status_code == 200, response.text
    hub = response.json()
    assert hub["staleness_seconds"] == 300 and hub["username"] == "" and hub["password_set"] is False


def test_invalid_updates_get_422_and_change_nothing(api):
    before = events(api)
    for method, body, field in (("PATCH", {"staleness_seconds": -5}, "staleness_seconds"),
                                ("PATCH", {"name": "renamed"}, "name"),
                                ("PUT", {"namespace": "library"}, "upstream")):
        response = api.request(method, "/api/v1/organizations/hub", json=body)
        assert response.status_code == 422, (method, body)
        assert field in error_of(response)["fields"]
    assert events(api) == before


def test_a_second_default_organization_is_a_conflict(api):
    assert api.patch("/api/v1/organizations/hub", json={"default": True}).status_code == 200

    response = api.post("/api/v1/organizations", json={"name": "other", "upstream": "http://h", "default": True})

    assert response.status_code == 409
    assert "hub" in error_of(response)["message"]
    assert api.get("/api/v1/organizations/other").status_code == 404


def test_a_deleted_organization_is_no_longer_listed_or_pulled_through(api):
    response = api.delete("/api/v1/organizations/hub")

    assert response.status_code == 204
    assert api.get("/api/v1/organizations").json() == {"organizations": []}
    pulled = api.get("/v2/hub/library/alpine/manifests/3.19", headers=ACCEPT)
    assert (pulled.status_code, pulled.json()["errors"][0]["code"]) == (404, "NAME_UNKNOWN")
    assert api.delete("/api/v1/organizations/hub").status_code == 404


def test_an_organization_of_the_config_file_is_not_changed_or_deleted_through_the_api_409_names_the_file(
        tmp_path, upstream):
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nadmin_token = "{TOKEN}"\n\n'
                      f'[[organizations]]\nname = "fromfile"\nupstream = "{upstream.url}"\n\n'
                      '[security]\nallowed_upstream_networks = ["127.0.0.0/8"]\n')   # for "mine", made below
    container = bootstrap(load_settings(str(config)))
    with TestClient(create_app(container)) as api:
        api.headers.update(AUTH)
        api.container = container
        before = events(api)
        for method, body in (("PATCH", {"staleness_seconds": 5}), ("PUT", {"upstream": upstream.url}),
                             ("DELETE", None)):
            response = api.request(method, "/api/v1/organizations/fromfile", json=body)
            assert response.status_code == 409, (method, response.text)
            assert error_of(response) == {"code": "conflict", "message": (
                f"organization 'fromfile' is defined in {config}, which is applied at every start: change it "
                "there and restart (orgs created through the API can be changed here)")}
        assert events(api) == before
        assert api.get("/api/v1/organizations/fromfile").json()["organization"]["staleness_seconds"] == 300
        # Orgs the API created stay the API's to change, next to those of the file.
        assert api.post("/api/v1/organizations", json={"name": "mine", "upstream": upstream.url}).status_code == 201
        assert api.patch("/api/v1/organizations/mine", json={"staleness_seconds": 5}).status_code == 200
        assert api.delete("/api/v1/organizations/mine").status_code == 204


def test_a_new_organization_never_inherits_what_a_deleted_one_of_that_name_cached(api):
    # An org an older version deleted with its cache kept: the cache goes with the new org's creation,
    # recorded as a flush by its creator. (test_org_recreate covers `delete --flush` on both backends.)
    assert api.post("/api/v1/organizations", json={"name": "old", "upstream": api.upstream.url}).status_code == 201
    pull(api, "old/library/alpine", "3.19")
    assert api.get(f"/v2/old/library/alpine/blobs/{ALPINE.layers[0].digest}").status_code == 200
    wait_for(lambda: api.get("/api/v1/organizations/old").json()["blob_count"])
    assert api.delete("/api/v1/organizations/old").status_code == 409   # it still caches an image
    assert api.container.orgs.delete("old")                              # as an older version did
    wait_for(lambda: api.get("/api/v1/organizations/old").status_code == 404)
    again = api.post("/api/v1/organizations", json={"name": "old", "upstream": api.upstream.url})
    assert again.status_code == 201, again.text
    shown = api.get("/api/v1/organizations/old").json()
    assert (shown["tag_count"], shown["pulls"], shown["blob_count"], shown["bytes_stored"]) == (0, {}, 0, 0)
    assert api.get("/api/v1/organizations/old/blobs").json()["items"] == []
    flushes = api.get("/api/v1/audit/evictions", params={"org": "old", "kind": "flush"}).json()
    assert [(f["actor"], f["dry_run"]) for f in flushes["items"]] == [("admin", False)]
    response = api.get("/v2/old/library/alpine/manifests/3.19", headers=ACCEPT)
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"   # from upstream again

    assert api.post("/api/v1/organizations", json={"name": "empty", "upstream": api.upstream.url}).status_code == 201
    assert api.delete("/api/v1/organizations/empty").status_code == 204
    recreated = api.post("/api/v1/organizations", json={"name": "empty", "upstream": api.upstream.url,
                                                        "staleness_seconds": 7})
    assert recreated.status_code == 201 and recreated.json()["staleness_seconds"] == 7
    shown = api.get("/api/v1/organizations/empty").json()
    assert (shown["tag_count"], shown["pulls"], shown["blob_count"]) == (0, {}, 0)
    assert api.get("/api/v1/organizations/empty/tags").json() == {"items": [], "next_cursor": None}


def test_unknown_admin_paths_get_a_json_error_and_v2_errors_stay_oci(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = api.get("/v2/nosuch/library/alpine/manifests/1")
    assert response.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_the_openapi_schema_describes_the_admin_api_and_its_token(api):
    response = api.get("/schema/openapi.json", headers={"Authorization": ""})

    assert response.status_code == 200
    schema = response.json()
    assert {"/api/v1/organizations", "/api/v1/organizations/{name}", "/api/v1/audit"} <= set(schema["paths"])
    assert not any(path.startswith("/v2") for path in schema["paths"])
    assert schema["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


# -- audit log -------------------------------------------------------------------------------------
@pytest.fixture
def pulled(api):
    """Five pulls by two actors: alpine miss, hit, hit (containerd); busybox miss, hit (podman)."""
    for user_agent in ("containerd/1.6.20", "containerd/1.6.20", "containerd/1.6.20"):
        pull(api, "hub/library/alpine", "3.19", user_agent)
    for user_agent in ("podman/4.3.1", "podman/4.3.1"):
        pull(api, "hub/library/busybox", "1.36", user_agent)
    assert wait_for(lambda: len(audit(api)["items"]) == 5)
    return api


def test_the_audit_log_is_filtered_by_org_repository_actor_result_and_time(pulled):
    def count(**params) -> int:
        return len(audit(pulled, **params)["items"])

    everything = audit(pulled)["items"]
    assert [(i["repository"], i["result"]) for i in everything] == [
        ("library/alpine", "miss"), ("library/alpine", "hit"), ("library/alpine", "hit"),
        ("library/busybox", "miss"), ("library/busybox", "hit")]
    assert everything[0]["org"] == "hub" and everything[0]["digest"] == ALPINE.manifest_digest
    assert everything[0]["at"].endswith("Z") and everything[0]["client"] == "testclient"
    assert count(org="hub") == 5 and count(org="other") == 0
    assert count(repository="library/busybox") == 2
    assert count(user_agent="containerd") == 3 and count(user_agent="podman", result="hit") == 1
    assert count(client="testclient") == 5 and count(client="10.0.0.9") == 0
    assert count(result="miss") == 2
    assert count(since="1h") == 5 and count(since="2999-01-01T00:00:00Z") == 0
    assert count(until=everything[3]["at"]) == 3
    assert count(since=everything[3]["at"], until=str(time.time() + 60)) == 2


def test_audit_pages_follow_the_cursor_to_the_end(pulled):
    seen, cursor, pages = [], None, 0
    while True:
        page = audit(pulled, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3 and len(seen) == 5 and seen == sorted(seen)


def test_the_audit_log_exports_as_json_lines_and_csv(pulled):
    jsonl = pulled.get("/api/v1/audit", params={"format": "jsonl", "user_agent": "containerd"})
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [line["result"] for line in lines] == ["miss", "hit", "hit"]

    exported = pulled.get("/api/v1/audit", params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 5 and rows[3]["repository"] == "library/busybox" and rows[3]["result"] == "miss"
    assert rows[0]["id"] == str(lines[0]["id"])


@pytest.mark.parametrize("params, field", [
    ({"result": "maybe"}, "result"), ({"since": "last tuesday"}, "since"), ({"until": "soon"}, "until"),
    ({"limit": 0}, "limit"), ({"limit": 5000}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "abc"}, "cursor"), ({"format": "xml"}, "format"),
    ({"since": "2030-01-01", "until": "2020-01-01"}, "since"),
])
def test_invalid_audit_queries_get_422_naming_the_parameter(api, params, field):
    response = api.get("/api/v1/audit", params=params)

    assert response.status_code == 422, response.text
    assert field in error_of(response)["fields"]
