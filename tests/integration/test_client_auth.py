"""Client authentication on /v2 (the token flow and Basic), robots and org admins, against a real upstream registry."""

from __future__ import annotations

import base64
import json

import pytest
from litestar.testing import TestClient

from infra.projection_runtime import open_view
from infra.settings import OrgSettings, SecuritySettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.clock import ManualClock
from tests.support.images import build_image, push_image
from tests.support.views import wait_for_rows

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"


def basic(username: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


ADMIN_HEADERS = bearer(ADMIN)


@pytest.fixture
def api(tmp_path, upstream_registry):
    image = build_image("auth", layers=1, layer_size=20_000)
    for repository in ("library/alpine", "library/busybox", "other/tool"):
        push_image(upstream_registry.url, repository, "1.0", image)
    clock = ManualClock()
    # The orgs are made through the API, so org admins may change them (an org of the config file they may
    # not); on loopback, which the operator allows for such orgs.
    settings = Settings(data_dir=str(tmp_path / "data"), organizations=(), admin_token=ADMIN,
                        security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))
    container = bootstrap(settings, clock=clock)
    with TestClient(create_app(container)) as client:
        for org in ({"name": "private", "upstream": upstream_registry.url, "anonymous_pull": False},
                    {"name": "open", "upstream": upstream_registry.url}):
            created = client.post("/api/v1/organizations", headers=ADMIN_HEADERS, json=org)
            assert created.status_code == 201, created.text
        client.container, client.clock, client.upstream_url = container, clock, upstream_registry.url
        yield client


def robot(api, org="private", name="ci", repositories=("library/*",), **extra) -> tuple[str, str]:
    response = api.post(f"/api/v1/organizations/{org}/robots", headers=ADMIN_HEADERS,
                        json={"name": name, "repositories": list(repositories), **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["username"] == f"{org}+{name}"
    return body["username"], body["token"]


def manifest(api, path: str, headers: dict | None = None):
    return api.get(f"/v2/{path}/manifests/1.0", headers={"Accept": ACCEPT, **(headers or {})})


def audit(container, count: int):
    view = open_view("audit", container.env)
    try:
        return wait_for_rows(view, count, 5.0)
    finally:
        view.close()


def test_anonymous_pull_of_a_protected_org_gets_the_bearer_challenge_and_an_open_org_serves(api):
    refused = manifest(api, "private/library/alpine")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="http://testserver.local/v2/token",service="entrepot",'
        'scope="repository:private/library/alpine:pull"')
    assert manifest(api, "open/library/alpine").status_code == 200
    # one org is protected: the version check challenges anonymous clients (containers/image learns to
    # authenticate from it alone), and they take an anonymous token for the open org
    assert api.get("/v2/").status_code == 401
    anonymous = api.get("/v2/token", params={"scope": "repository:open/library/alpine:pull"}).json()["token"]
    assert manifest(api, "open/library/alpine", bearer(anonymous)).status_code == 200
    assert [(r.org, r.result, r.actor) for r in audit(api.container, 2)] == [
        ("open", "miss", "anonymous"), ("open", "hit", "anonymous")]


def test_a_robot_pulls_with_basic_and_through_the_token_flow_and_the_audit_names_it(api):
    username, token = robot(api)
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 200
    answer = api.get("/v2/token", params={"service": "entrepot", "scope": "repository:private/library/busybox:pull"},
                     headers=basic(username, token))
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    assert manifest(api, "private/library/busybox", bearer(body["token"])).status_code == 200
    rows = audit(api.container, 2)
    assert [(r.repository, r.result, r.actor) for r in rows] == [
        ("library/alpine", "miss", "private+ci"), ("library/busybox", "miss", "private+ci")]


def test_a_robot_outside_its_patterns_is_refused_and_the_refusal_is_audited(api):
    username, token = robot(api)
    refused = manifest(api, "private/other/tool", basic(username, token))
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "DENIED"
    # through the token flow: a token without that grant, then 401 insufficient_scope as distribution answers
    answer = api.get("/v2/token", params={"scope": "repository:private/other/tool:pull"}, headers=basic(username, token))
    insufficient = manifest(api, "private/other/tool", bearer(answer.json()["token"]))
    assert insufficient.status_code == 401
    assert 'error="insufficient_scope"' in insufficient.headers["www-authenticate"]
    rows = audit(api.container, 2)
    assert [(r.result, r.actor, r.status, r.error_code) for r in rows] == [
        ("denied", "private+ci", 403, "DENIED"), ("denied", "private+ci", 401, "UNAUTHORIZED")]
    assert all("other/tool" in r.note for r in rows)


def test_refused_blob_referrers_and_tag_list_requests_are_audited_too(api):
    username, token = robot(api)
    digest = "sha256:" + "ab" * 32
    # first: a HEAD's refusal is not recorded (it would be the first row below)
    assert api.head(f"/v2/private/other/tool/blobs/{digest}", headers=basic(username, token)).status_code == 403
    for path in (f"/v2/private/other/tool/blobs/{digest}", f"/v2/private/other/tool/referrers/{digest}",
                 "/v2/private/other/tool/tags/list"):
        assert api.get(path, headers=basic(username, token)).status_code == 403
    assert api.get(f"/v2/private/library/alpine/blobs/{digest}", headers=basic(username, "wrong")).status_code == 401
    rows = audit(api.container, 4)
    assert [(r.repository, r.reference, r.result, r.actor, r.status) for r in rows] == [
        ("other/tool", digest, "denied", "private+ci", 403),
        ("other/tool", f"referrers:{digest}", "denied", "private+ci", 403),
        ("other/tool", "tags/list", "denied", "private+ci", 403),
        ("library/alpine", digest, "denied", "private+ci", 401)]
    before = api.container.pulls.recorder.max_notification_id()
    assert api.get("/v2/private/other/tool/blobs/sha256:short", headers=basic(username, token)).status_code == 400
    assert api.container.pulls.recorder.max_notification_id() == before


def test_a_wrong_token_is_refused_and_audited_without_the_secret(api):
    username, token = robot(api)
    wrong = token[:-4] + "AAAA"
    assert manifest(api, "private/library/alpine", basic(username, wrong)).status_code == 401
    refused = api.get("/v2/token", params={"scope": "repository:private/library/alpine:pull"},
                      headers=basic(username, wrong))
    assert refused.status_code == 401
    rows = audit(api.container, 2)
    assert [(r.result, r.actor, r.status) for r in rows] == [("denied", "private+ci", 401)] * 2
    assert all(wrong not in repr(r) and token not in repr(r) for r in rows)


def test_anonymous_tokens_grant_nothing_in_a_protected_org(api):
    answer = api.get("/v2/token", params={"scope": "repository:private/library/alpine:pull"})
    assert answer.status_code == 200
    assert manifest(api, "private/library/alpine", bearer(answer.json()["token"])).status_code == 401


def test_tokens_expire_and_forged_ones_are_refused(api):
    username, token = robot(api)
    answer = api.get("/v2/token", params={"scope": "repository:private/library/alpine:pull"},
                     headers=basic(username, token))
    issued = answer.json()["token"]
    assert manifest(api, "private/library/alpine", bearer(issued)).status_code == 200
    header, claims, signature = issued.split(".")
    assert manifest(api, "private/library/alpine", bearer(f"{header}.{claims}.{signature[::-1]}")).status_code == 401
    api.clock.advance(400)
    assert manifest(api, "private/library/alpine", bearer(issued)).status_code == 401


def test_disabled_rotated_and_deleted_robots_stop_working(api):
    username, token = robot(api)
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 200
    assert api.post("/api/v1/organizations/private/robots/ci/disable", headers=ADMIN_HEADERS).json()["disabled"]
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 401
    api.post("/api/v1/organizations/private/robots/ci/enable", headers=ADMIN_HEADERS)
    rotated = api.post("/api/v1/organizations/private/robots/ci/rotate", headers=ADMIN_HEADERS).json()
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 401
    assert manifest(api, "private/library/alpine", basic(username, rotated["token"])).status_code == 200
    assert api.delete("/api/v1/organizations/private/robots/ci", headers=ADMIN_HEADERS).status_code == 204
    assert manifest(api, "private/library/alpine", basic(username, rotated["token"])).status_code == 401
    assert api.get("/api/v1/organizations/private/robots", headers=ADMIN_HEADERS).json() == {"robots": []}


def test_all_cached_repositories_are_expanded_when_granted(api):
    assert manifest(api, "private/other/tool", ADMIN_HEADERS).status_code == 200   # the global admin pulls anything
    username, token = robot(api, name="warmer", repositories=["*"])
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 200
    assert [r.actor for r in audit(api.container, 2)] == ["admin", "private+warmer"]
    _, frozen = robot(api, name="frozen", repositories=[], all_cached=True)
    shown = api.get("/api/v1/organizations/private/robots/frozen", headers=ADMIN_HEADERS).json()
    assert shown["repositories"] == ["library/alpine", "other/tool"]
    assert manifest(api, "private/library/busybox", basic("private+frozen", frozen)).status_code == 403
    log = api.get("/api/v1/admin-log", headers=ADMIN_HEADERS).json()["items"]
    assert "expanded from the 2 repositories cached now" in log[-1]["detail"]


def test_an_org_admin_manages_its_org_only_and_every_action_is_in_the_admin_log(api):
    created = api.post("/api/v1/organizations/private/admins", headers=ADMIN_HEADERS, json={"name": "lead"}).json()
    lead = basic(created["username"], created["token"])
    assert api.patch("/api/v1/organizations/private", headers=lead, json={"staleness_seconds": 60}).status_code == 200
    made = api.post("/api/v1/organizations/private/robots", headers=lead, json={"name": "ci", "repositories": ["*"]})
    assert made.status_code == 201
    for method, path in (("PATCH", "/api/v1/organizations/open"), ("GET", "/api/v1/organizations"),
                         ("POST", "/api/v1/organizations/private/admins"), ("GET", "/api/v1/audit?org=open"),
                         ("GET", "/api/v1/organizations/open/robots")):
        assert api.request(method, path, headers=lead, json={"name": "x"}).status_code == 403, (method, path)
    # a robot's credentials do not administer anything; wrong credentials are a 401
    robot_headers = basic("private+ci", made.json()["token"])
    assert api.get("/api/v1/organizations/private", headers=robot_headers).status_code == 403
    assert api.get("/api/v1/organizations/private", headers=basic("private+lead", "nope")).status_code == 401
    # the org admin pulls all of its org
    assert manifest(api, "private/other/tool", lead).status_code == 200
    # ... and reads its org's audit, never another's: without ?org= it is its own
    assert manifest(api, "open/library/alpine").status_code == 200
    assert len(audit(api.container, 2)) == 2
    for query in ("", "?org=private"):
        rows = api.get(f"/api/v1/audit{query}", headers=lead).json()["items"]
        assert [(r["org"], r["actor"]) for r in rows] == [("private", "private+lead")], query
    everything = api.get("/api/v1/audit", headers=ADMIN_HEADERS).json()["items"]
    assert {r["org"] for r in everything} == {"private", "open"}
    log = api.get("/api/v1/admin-log", headers=ADMIN_HEADERS).json()["items"]
    assert [(i["actor"], i["action"], i["target"]) for i in log] == [
        ("admin", "org.create", "private"), ("admin", "org.create", "open"),   # the fixture's
        ("admin", "admin.create", "private+lead"), ("private+lead", "org.update", "private"),
        ("private+lead", "robot.create", "private+ci")]
    own = api.get("/api/v1/admin-log", headers=lead).json()["items"]
    assert len(own) == 4   # its org's: created, its admin, the update, the robot
    assert api.get("/api/v1/admin-log", headers=lead, params={"org": "open"}).status_code == 403


def test_bad_robot_input_is_refused_and_changes_nothing(api):
    for body in ({"name": "Bad Name", "repositories": []}, {"name": "ok", "repositories": ["../x"]},
                 {"name": "ok", "repositories": "library/*"}, {"name": "ok", "extra": 1}):
        response = api.post("/api/v1/organizations/private/robots", headers=ADMIN_HEADERS, json=body)
        assert response.status_code == 422, (body, response.text)
    assert api.post("/api/v1/organizations/nope/robots", headers=ADMIN_HEADERS,
                    json={"name": "ci"}).status_code == 404
    assert api.post("/api/v1/organizations/private/robots/ghost/rotate", headers=ADMIN_HEADERS).status_code == 404
    robot(api)
    assert api.post("/api/v1/organizations/private/robots", headers=ADMIN_HEADERS,
                    json={"name": "ci"}).status_code == 409
    assert api.get("/api/v1/admin-log", headers=ADMIN_HEADERS).json()["items"][-1]["action"] == "robot.create"
    assert len(api.get("/api/v1/admin-log", headers=ADMIN_HEADERS).json()["items"]) == 3   # 2 org.create + 1 robot


def test_the_version_check_answers_anonymous_clients_only_when_every_org_is_open(tmp_path, upstream_registry):
    open_only = bootstrap(Settings(data_dir=str(tmp_path / "open"), admin_token=ADMIN,
                                   organizations=(OrgSettings(name="open", upstream=upstream_registry.url),)))
    with TestClient(create_app(open_only)) as api:
        assert api.get("/v2/").status_code == 200
    orgs = (OrgSettings(name="private", upstream=upstream_registry.url, anonymous_pull=False),)
    container = bootstrap(Settings(data_dir=str(tmp_path / "data"), organizations=orgs, admin_token=ADMIN))
    with TestClient(create_app(container)) as api:
        refused = api.get("/v2/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="http://testserver.local/v2/token",service="entrepot"'
        username, token = robot(api)
        assert api.get("/v2/", headers=basic(username, token)).status_code == 200
        assert api.get("/v2/", headers=basic(username, "wrong")).status_code == 401


def test_deleting_an_org_deletes_its_robots_and_exports_carry_the_actor(api):
    username, token = robot(api)
    assert manifest(api, "private/library/alpine", basic(username, token)).status_code == 200
    audit(api.container, 1)
    exported = api.get("/api/v1/audit", params={"format": "csv"}, headers=ADMIN_HEADERS).text.splitlines()
    header = exported[0].split(",")
    assert "actor" in header and exported[1].split(",")[header.index("actor")] == "private+ci"
    lines = api.get("/api/v1/audit", params={"format": "jsonl", "actor": "private+ci"}, headers=ADMIN_HEADERS).text
    assert [json.loads(line)["actor"] for line in lines.splitlines()] == ["private+ci"]
    assert api.get("/api/v1/audit", params={"actor": "nobody"}, headers=ADMIN_HEADERS).json()["items"] == []

    # It cached an image: deleted with its cache (a plain delete is refused, test_org_recreate).
    assert api.delete("/api/v1/organizations/private", params={"flush": "true"}, headers=ADMIN_HEADERS).status_code == 204
    assert api.get("/v2/token", params={"scope": "repository:private/library/alpine:pull"},
                   headers=basic(username, token)).status_code == 401
    # A new org of a deleted one's name starts without its robots.
    open_user, open_token = robot(api, org="open")
    assert api.delete("/api/v1/organizations/open", headers=ADMIN_HEADERS).status_code == 204
    created = api.post("/api/v1/organizations", headers=ADMIN_HEADERS,
                       json={"name": "open", "upstream": api.upstream_url, "anonymous_pull": False})
    assert created.status_code == 201, created.text
    assert api.get("/api/v1/organizations/open/robots", headers=ADMIN_HEADERS).json() == {"robots": []}
    assert manifest(api, "open/library/alpine", basic(open_user, open_token)).status_code == 401
    actions = [(i["action"], i["detail"]) for i in api.get("/api/v1/admin-log", headers=ADMIN_HEADERS).json()["items"]]
    assert actions.count(("org.delete", "1 robots deleted with it")) == 1
    assert [d for a, d in actions if a == "org.delete" and d.startswith("1 robots deleted with it; flushed 1 images")]
    assert actions[-1][0] == "org.create" and "anonymous_pull=False" in actions[-1][1]


def test_a_token_is_not_exchanged_for_another_one(api):
    username, token = robot(api)
    issued = api.get("/v2/token", params={"scope": "repository:private/library/alpine:pull"},
                     headers=basic(username, token)).json()["token"]
    api.post("/api/v1/organizations/private/robots/ci/disable", headers=ADMIN_HEADERS)
    refreshed = api.get("/v2/token", params={"scope": "repository:private/library/busybox:pull"},
                        headers=bearer(issued)).json()["token"]
    assert manifest(api, "private/library/busybox", bearer(refreshed)).status_code == 401


def test_bad_input_from_a_refused_client_is_a_400_and_records_nothing(api):
    username, token = robot(api)
    before = api.container.pulls.recorder.max_notification_id()
    for headers in (basic(username, token), basic(username, "wrong")):
        answer = api.get("/v2/private/other/tool/manifests/-bad-tag", headers=headers)
        assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "TAG_INVALID"
    assert api.container.pulls.recorder.max_notification_id() == before
