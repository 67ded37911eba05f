"""Hostile admin requests get a clear 4xx in the admin API's JSON shape, never a 5xx, and change nothing.

On both backends (SQLite and PostgreSQL): the bugs reported were backend-specific (a 30-digit cursor
overflowed SQLite, a NUL in a query parameter broke PostgreSQL).
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from litestar.testing import TestClient

from domain.org import RESERVED_ORG_NAMES
from infra.settings import DatabaseSettings, OrgSettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.postgres import BACKENDS

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
ORGS = "/api/v1/organizations"


@contextmanager
def admin_client(request, backend: str, data_dir: Path) -> Iterator[TestClient]:
    database = DatabaseSettings()
    if backend == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"l_{secrets.token_hex(3)}")
    settings = Settings(data_dir=str(data_dir), admin_token=TOKEN, database=database,
                        organizations=(OrgSettings(name="hub", upstream="http://127.0.0.1:1", username="bob",
                                                   password="hunter2"),))
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        client.headers.update({"Authorization": f"Bearer {TOKEN}"})
        client.container = container
        yield client


@pytest.fixture(scope="module", params=BACKENDS)
def api(request, tmp_path_factory) -> Iterator[TestClient]:
    """One app per backend for the module's tests that send only requests to be refused: refused()
    checks that each changes nothing stored, so they cannot disturb one another (and an app costs
    seconds to set up on PostgreSQL)."""
    with admin_client(request, request.param, tmp_path_factory.mktemp("admin-limits") / "data") as client:
        yield client


@pytest.fixture
def own_api(request, event_store_backend, tmp_path) -> Iterator[TestClient]:
    """An app of this test's own, for requests that may be accepted (and so change what is stored)."""
    with admin_client(request, event_store_backend, tmp_path / "data") as client:
        yield client


def stored(api) -> tuple:
    """Every notification count that a write would move, and the orgs as the view shows them."""
    c = api.container
    return (c.records.recorder.max_notification_id(), c.credentials.recorder.max_notification_id(),
            c.pulls.recorder.max_notification_id(), [(o.name, o.settings) for o in c.read_views["orgs"].list_orgs()])


def refused(api, method: str, path: str, status: int, **kwargs) -> dict:
    before = stored(api)
    response = api.request(method, path, **kwargs)
    assert response.status_code == status, (method, path, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert stored(api) == before
    return error


def raw(body: str | bytes, content_type: str = "application/json") -> dict:
    return {"content": body.encode() if isinstance(body, str) else body, "headers": {"Content-Type": content_type}}


def test_only_json_bodies_are_accepted(api):
    body = json.dumps({"name": "new", "upstream": "http://h"})
    assert refused(api, "POST", ORGS, 415, **raw(body, "text/plain"))["code"] == "unsupported_media_type"
    refused(api, "PATCH", f"{ORGS}/hub", 415, **raw('{"staleness_seconds": 5}', "application/x-www-form-urlencoded"))
    refused(api, "PUT", f"{ORGS}/hub", 415, content=b'{"upstream": "http://h"}')


def test_a_body_over_64_kib_is_refused_before_it_is_read(api):
    body = json.dumps({"name": "new", "upstream": "http://h", "username": "u" * 70_000})
    assert refused(api, "POST", ORGS, 413, **raw(body))["code"] == "too_large"


@pytest.mark.parametrize("body, field", [
    ({"name": "new", "upstream": "http://h", "staleness_seconds": "300"}, "staleness_seconds"),
    ({"name": "new", "upstream": "http://h", "default": "true"}, "default"),
    ({"name": "new", "upstream": "http://h", "max_stale_seconds": 10**30}, "max_stale_seconds"),
    ({"name": "new", "upstream": "http://h", "negative_cache_seconds": 1e300}, "negative_cache_seconds"),
    ({"name": "new", "upstream": "http://h", "username": "u" * 5000}, "username"),
    ({"name": "new", "upstream": "http://h", "password": "p" * 5000}, "password"),
    ({"name": "new", "upstream": "http://" + "h" * 5000}, "upstream"),
    ({"name": "n" * 5000, "upstream": "http://h"}, "name"),
    ({"name": "new", "upstream": ["http://h"]}, "upstream"),
    ({"name": None, "upstream": "http://h"}, "name"),
])
def test_types_are_strict_and_every_field_is_bounded(api, body, field):
    # Wrong types stay 422 naming the field, like every other invalid field of this API (README).
    error = refused(api, "POST", ORGS, 422, json=body)
    assert field in error["fields"], error


@pytest.mark.parametrize("body", [
    '{"name": "new", "name": "other", "upstream": "http://h"}',
    "[" * 100_00 + "]" * 100_00,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '{"name": "new", "upstream": "http://h", "staleness_seconds": NaN}',
    '{"name": "new", "upstream": "http://h", "staleness_seconds": ' + "9" * 5000 + "}",
    '"just a string"', "", "\xff\xfe", '{"name": "new"',
])
def test_odd_json_is_a_bad_request(api, body):
    assert refused(api, "POST", ORGS, 400, **raw(body))["code"] == "bad_request"


@pytest.mark.parametrize("name", sorted(RESERVED_ORG_NAMES))
def test_reserved_org_names_are_refused(api, name):
    assert "name" in refused(api, "POST", ORGS, 422, json={"name": name, "upstream": "http://h"})["fields"]


@pytest.mark.parametrize("name", ["%00", "a" * 5000, "hub%0A", "HUB", "%E2%98%83"])
def test_odd_org_names_in_the_path_are_unknown(api, name):
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        body = {"json": {"upstream": "http://h"}} if method in ("PATCH", "PUT") else {}
        assert refused(api, method, f"{ORGS}/{name}", 404, **body)["code"] == "not_found"


def test_every_top_level_path_the_server_routes_is_a_reserved_org_name(api):
    firsts = {route.path.strip("/").split("/")[0] for route in api.app.routes} - {""}
    assert firsts <= RESERVED_ORG_NAMES, firsts - RESERVED_ORG_NAMES


@pytest.mark.parametrize("params, field", [
    ({"cursor": "9" * 30}, "cursor"),
    ({"cursor": "١٢٣"}, "cursor"),
    ({"repository": "\x00"}, "repository"),
    ({"org": "hub\r\nX-Evil: 1"}, "org"),
    ({"user_agent": "a" * 10_000}, "user_agent"),
    ({"client": "\x7f"}, "client"),
    ({"since": "1e400"}, "since"),
    ({"since": "nan"}, "since"),
    ({"until": "9999999999999999d"}, "until"),
    ({"limit": str(10**30)}, "limit"),
    ({"limit": "-1", "format": "csv"}, "limit"),
])
def test_every_audit_parameter_is_checked(api, params, field):
    error = refused(api, "GET", "/api/v1/audit", 422, params=params)
    assert field in error["fields"], error


# -- fuzz ------------------------------------------------------------------------------------------
ODD_STRINGS = ["", " ", "\x00", "\r\n", "é", "💥", "a" * 3000, "../../etc", "%00", "null", "-1", "1e999",
               "hub", "Hub", "a/b", "http://", "docker.io\x00", "\\", "'\"", "${jndi:x}"]
ODD_VALUES = [None, True, False, 0, -1, 10**20, 1.5, float("1e300"), "", "x" * 5000, [], {}, [1], {"a": 1}]
FIELDS = ["name", "upstream", "namespace", "staleness_seconds", "max_stale_seconds", "negative_cache_seconds",
          "on_upstream_denied", "rate_limit_floor", "username", "password", "default", "colour"]
CONTENT_TYPES = ["application/json", "text/plain", "", "application/json; charset=latin-1", "application/xml",
                 "multipart/form-data; boundary=x", "application/vnd.api+json"]
AUDIT_PARAMS = ["org", "repository", "result", "client", "user_agent", "since", "until", "cursor", "limit", "format"]


def malformed_body(rng: random.Random) -> bytes:
    """A body with at least one thing wrong: an odd value for a field, or text that is not a JSON object."""
    kind = rng.randrange(4)
    if kind == 0:
        body = {"name": rng.choice(ODD_STRINGS), "upstream": rng.choice(ODD_STRINGS + ["http://h"])}
        body[rng.choice(FIELDS)] = rng.choice(ODD_VALUES + ODD_STRINGS)
        return json.dumps(body).encode()
    if kind == 1:
        return rng.choice([b"{", b"[]", b"1", b"null", b'{"a":1,"a":2}', b"\xff" * 10, b'{"x": Infinity}',
                           b"[" * 3000, b'{"upstream": "http://h"} trailing'])
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    return json.dumps({rng.choice(FIELDS): rng.choice(ODD_VALUES) for _ in range(rng.randrange(1, 6))}).encode()


def test_a_few_hundred_malformed_admin_requests_get_no_5xx_and_change_nothing(own_api):
    # Its own app: a random request may be a valid one, and only refused ones must change nothing.
    api = own_api
    rng = random.Random(20261129)
    for i in range(300):
        before = stored(api)
        if rng.random() < 0.15:   # an odd org name in the path
            method = rng.choice(["GET", "DELETE", "PATCH", "PUT"])
            name = quote(rng.choice(ODD_STRINGS + ["a" * 70, "hub\n", "HUB"]), safe="")
            response = api.request(method, f"{ORGS}/{name}", json={"staleness_seconds": 1} if method != "GET" else None)
        elif rng.random() < 0.3:
            params = {rng.choice(AUDIT_PARAMS): rng.choice(ODD_STRINGS + ["9" * rng.randrange(1, 40)])
                      for _ in range(rng.randrange(1, 4))}
            response = api.get("/api/v1/audit", params=params)
        else:
            method, path = rng.choice([("POST", ORGS), ("PUT", f"{ORGS}/hub"), ("PATCH", f"{ORGS}/hub"),
                                       ("PATCH", f"{ORGS}/nosuch"), ("POST", f"{ORGS}/hub")])
            headers = {"Content-Type": rng.choice(CONTENT_TYPES)} if rng.random() < 0.9 else {}
            response = api.request(method, path, content=malformed_body(rng), headers=headers)
        assert response.status_code < 500, (i, response.request.method, response.request.url, response.text[:300])
        if response.status_code >= 400:
            assert "error" in response.json(), (i, response.text[:300])
            assert stored(api) == before, (i, response.request.url)
