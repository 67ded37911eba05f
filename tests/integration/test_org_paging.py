"""An org's cached tags and blobs through the admin API, a page at a time, on SQLite and PostgreSQL.

`GET /api/v1/organizations/{name}` answers a summary of the same size however much the org caches;
the tags and blobs themselves come in keyset pages (`/tags`, `/blobs`) that a client follows by cursor.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from infra.settings import DatabaseSettings, OrgSettings, Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.postgres import BACKENDS

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPOSITORIES = ("library/a", "library/a-b", "library/b", "tools/x")
TAGS = ("1", "1.1", "10", "2", "latest")


@pytest.fixture(params=BACKENDS)
def api(request, tmp_path) -> Iterator[TestClient]:
    database = DatabaseSettings()
    if request.param == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"p_{secrets.token_hex(3)}")
    settings = Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN, database=database,
                        organizations=(OrgSettings(name="hub", upstream="https://registry.example.com"),
                                       OrgSettings(name="other", upstream="https://other.example.com")))
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        client.headers.update({"Authorization": f"Bearer {TOKEN}"})
        client.container = container
        yield client


def cache(api: TestClient) -> None:
    """20 tags in 4 repositories and 12 blobs in hub, recorded as a pull would; one of each in `other`."""
    records = api.container.records
    for r, repository in enumerate(REPOSITORIES):
        for t, tag in enumerate(TAGS):
            records.record_tag("hub", repository, tag, f"sha256:{r:032x}{t:032x}", MANIFEST, 1.0)
    for n in range(12):
        records.record_blob("hub", "library/a", f"sha256:{n:064x}", 1000 + n, 2.0)
    records.record_tag("other", "library/a", "0", "sha256:" + "f" * 64, MANIFEST, 1.0)
    records.record_blob("other", "library/a", "sha256:" + "e" * 64, 5, 2.0)


def settled(api: TestClient, org: str, tags: int, blobs: int) -> dict:
    deadline = time.monotonic() + 20
    while True:
        shown = api.get(f"/api/v1/organizations/{org}").json()
        if (shown["tag_count"], shown["blob_count"]) == (tags, blobs) or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)


def every_page(api: TestClient, path: str, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        answer = api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages


def test_org_show_is_a_summary_and_its_tags_and_blobs_come_in_pages_that_list_each_once(api):
    cache(api)
    shown = settled(api, "hub", 20, 12)
    assert (shown["tag_count"], shown["repository_count"], shown["blob_count"]) == (20, 4, 12)
    assert "repositories" not in shown and "tags" not in shown

    pages = every_page(api, "/api/v1/organizations/hub/tags", limit=7)
    assert [len(page) for page in pages] == [7, 7, 6]
    listed = [(tag["repository"], tag["tag"]) for page in pages for tag in page]
    assert listed == sorted((repository, tag) for repository in REPOSITORIES for tag in TAGS)
    assert pages[0][0]["digest"] == f"sha256:{0:032x}{0:032x}" and pages[0][0]["media_type"] == MANIFEST

    one = every_page(api, "/api/v1/organizations/hub/tags", repository="library/b", limit=2)
    assert [tag["tag"] for page in one for tag in page] == sorted(TAGS)

    blobs = every_page(api, "/api/v1/organizations/hub/blobs", limit=5)
    assert [len(page) for page in blobs] == [5, 5, 2]
    assert [blob["digest"] for page in blobs for blob in page] == [f"sha256:{n:064x}" for n in range(12)]
    assert blobs[0][0]["size"] == 1000 and blobs[0][0]["repository"] == "library/a"

    # A page exactly as long as what is left is the last: no empty page to ask for.
    exact = api.get("/api/v1/organizations/hub/blobs", params={"limit": 12}).json()
    assert len(exact["items"]) == 12 and exact["next_cursor"] is None


def test_bad_paging_requests_get_a_clear_400_or_404_and_change_nothing(api):
    cache(api)
    settled(api, "hub", 20, 12)
    before = api.container.records.recorder.max_notification_id()
    for path, params, field in (("tags", {"cursor": "not-a-cursor"}, "cursor"),
                                ("tags", {"cursor": "W10"}, "cursor"),          # a valid encoding of []
                                ("blobs", {"cursor": "WyJhIiwiYiJd"}, "cursor"),  # two names, a blob has one
                                ("tags", {"cursor": "x" * 5000}, "cursor"),
                                ("tags", {"limit": 0}, "limit"),
                                ("blobs", {"limit": 1001}, "limit")):
        answer = api.get(f"/api/v1/organizations/hub/{path}", params=params)
        assert answer.status_code == 422, (path, params, answer.text)
        assert field in answer.json()["error"]["fields"], answer.text
    for path in ("tags", "blobs"):
        answer = api.get(f"/api/v1/organizations/nosuch/{path}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", answer.text
    assert api.get("/api/v1/organizations/hub/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.container.records.recorder.max_notification_id() == before
