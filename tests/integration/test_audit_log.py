"""The audit log of failed and stale pulls through the whole app, on SQLite and PostgreSQL.

A real registry behind a fault-injecting proxy; the app built by the composition root; the admin API read back.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from infra.settings import DatabaseSettings, OrgSettings, Settings, UpstreamSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import build_image, push_image
from tests.support.postgres import BACKENDS

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
IMAGE = build_image("audit/alpine", layers=1, layer_size=10_000)


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    """One registry for the module, only pulled from; the faults go into each test's own proxy."""
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", IMAGE)
    return registry


@contextmanager
def started_proxy(upstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxy(upstream):
    with started_proxy(upstream) as proxy:
        yield proxy


@contextmanager
def app_on(request, backend: str, proxy: FaultProxy, data_dir: Path) -> Iterator[TestClient]:
    """The app on `backend`: `hub` behind the proxy, `down` whose upstream refuses connections."""
    database = DatabaseSettings()
    if backend == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"a_{secrets.token_hex(3)}")
    settings = Settings(
        data_dir=str(data_dir), admin_token=TOKEN, database=database,
        upstream=UpstreamSettings(failures_before_backoff=1000),   # every pull asks upstream: no back-off
        organizations=(OrgSettings(name="hub", upstream=proxy.url, staleness_seconds=0, max_stale_seconds=3600),
                       # Port 1, as elsewhere in the tests: a port free now could be another test's
                       # server by the time `down` is pulled (it was: a 404 instead of the 503).
                       OrgSettings(name="down", upstream="http://127.0.0.1:1")))
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        client.headers.update({"Authorization": f"Bearer {TOKEN}"})
        client.container = container
        yield client


@pytest.fixture
def api(request, event_store_backend, proxy, tmp_path):
    """An app of the test's own on the test's backend."""
    with app_on(request, event_store_backend, proxy, tmp_path / "data") as client:
        yield client


@pytest.fixture(scope="module", params=BACKENDS)
def unchanged_api(request, upstream, tmp_path_factory):
    """One app per backend for the requests that must leave the audit log empty: each case checks
    that it stays empty, so a case that recorded something still fails (and so would the next)."""
    with started_proxy(upstream) as proxy, \
            app_on(request, request.param, proxy, tmp_path_factory.mktemp("audit") / "data") as client:
        yield client


def audit(api, **params) -> list[dict]:
    response = api.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def audited(api, count: int, timeout: float = 10.0, **params) -> list[dict]:
    """The audit rows matching `params` once there are `count` of them (the view follows the events)."""
    deadline = time.monotonic() + timeout
    while len(rows := audit(api, **params)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def pull(api, path: str, method: str = "GET"):
    return api.request(method, f"/v2/{path}", headers={**ACCEPT, "User-Agent": "podman/5.0"})


def oci_code(response) -> str:
    return response.json()["errors"][0]["code"]


def oci_message(response) -> str:
    return response.json()["errors"][0]["message"]


def test_failed_pulls_are_audited_with_their_status_code_and_message(api, proxy):
    missing = pull(api, "hub/library/alpine/manifests/no-such-tag")
    proxy.add(Fault(r"/manifests/limited$", status=429, headers={"Retry-After": "30"}))
    limited = pull(api, "hub/library/alpine/manifests/limited")
    down = pull(api, "down/library/alpine/manifests/3.19")
    assert [(r.status_code, oci_code(r)) for r in (missing, limited, down)] == [
        (404, "MANIFEST_UNKNOWN"), (429, "TOOMANYREQUESTS"), (503, "UNAVAILABLE")]

    rows = audited(api, 3, result="error")
    assert [(r["org"], r["reference"], r["status"], r["error_code"], r["digest"]) for r in rows] == [
        ("hub", "no-such-tag", 404, "MANIFEST_UNKNOWN", ""), ("hub", "limited", 429, "TOOMANYREQUESTS", ""),
        ("down", "3.19", 503, "UNAVAILABLE", "")]
    # The note is the message the client got.
    assert [r["note"] for r in rows] == [oci_message(missing), oci_message(limited), oci_message(down)]
    assert all(r["result"] == "error" and r["user_agent"] == "podman/5.0" for r in rows)
    # The counters view follows the same log as the audit view, but reads it on its own: waited for too.
    deadline = time.monotonic() + 5
    while (shown := api.get("/api/v1/organizations/hub").json())["pulls"] != {"error": 2} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shown["pulls"] == {"error": 2}   # counted per org, as neither hits nor misses


def test_a_negative_cache_hit_is_audited_like_the_404_it_answers(api, proxy):
    for _ in range(2):
        assert pull(api, "hub/library/alpine/manifests/no-such-tag").status_code == 404
    assert len([r for r in proxy.requests if "/manifests/no-such-tag" in r[1]]) == 1   # the second was remembered
    rows = audited(api, 2, result="error")
    assert [(r["status"], r["error_code"]) for r in rows] == [(404, "MANIFEST_UNKNOWN")] * 2


def test_a_stale_serve_shows_its_note_in_the_audit_log_and_its_exports(api, proxy):
    assert pull(api, "hub/library/alpine/manifests/3.19").headers["x-cache"] == "MISS"
    proxy.add(Fault(r"/manifests/3.19$", method="HEAD", status=503))
    stale = pull(api, "hub/library/alpine/manifests/3.19")
    assert stale.headers["x-cache"] == "STALE"

    [row] = audited(api, 1, result="stale")
    assert "503" in row["note"] and row["note"] in stale.headers["warning"]
    assert (row["status"], row["error_code"]) == (200, "")

    jsonl = api.get("/api/v1/audit", params={"format": "jsonl", "result": "stale"})
    assert json.loads(jsonl.text)["note"] == row["note"]
    exported = list(csv.DictReader(io.StringIO(api.get("/api/v1/audit", params={"format": "csv"}).text)))
    assert [(r["result"], r["status"], r["error_code"]) for r in exported] == [("miss", "200", ""), ("stale", "200", "")]
    assert exported[1]["note"] == row["note"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "hub/library/Alpine/manifests/3.19", 400),          # invalid repository name
    ("GET", "hub/library/alpine/manifests/-bad-tag", 400),      # invalid tag
    ("GET", "hub/library/alpine/manifests/sha256:abc", 400),    # invalid digest
    ("GET", "nobody/library/alpine/manifests/3.19", 404),       # no such org, and no default org
    ("HEAD", "hub/library/alpine/manifests/no-such-tag", 404),  # a HEAD is never a pull
])
def test_bad_input_and_heads_leave_the_audit_log_unchanged(unchanged_api, method, path, status):
    api = unchanged_api
    before = api.container.pulls.recorder.max_notification_id()
    assert pull(api, path, method).status_code == status
    assert api.container.pulls.recorder.max_notification_id() == before
    assert audit(api) == []
