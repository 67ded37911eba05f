"""Referrers lists cached like a tag, on SQLite and PostgreSQL: the upstream's list recorded as events and
served after a restart with that upstream stopped (stale past the org's staleness), evicted referrers out
of the list and back when cached again, flush and org delete dropping recorded lists, and a rebuild of the
referrers view from the events giving the same lists."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from litestar.testing import TestClient

from application.cache_records import CacheRecords
from domain.referrers import Descriptor, Referrer
from domain.referrers_list import as_recorded
from infra.projection_runtime import open_view, projection_runners, rebuild
from infra.settings import DatabaseSettings, OrgSettings, Settings, UpstreamSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.clock import ManualClock
from tests.support.httpserver import LocalHTTPServer
from tests.support.images import build_artifact, build_image, push_image, referrers_index_of
from tests.support.referrers_api import PAGES, SBOM, SUBJECT, referrers_api
from tests.support.retention import until

pytestmark = pytest.mark.integration
STALENESS = 60
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IN_TOTO = "application/vnd.in-toto+json"


def settings_on(request, backend: str, tmp_path, upstream: str) -> Settings:
    """One org on the test's backend; the same settings again are the same cache after a restart."""
    database = DatabaseSettings()
    if backend == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"r_{secrets.token_hex(3)}")
    return Settings(data_dir=str(tmp_path / "data"), database=database,
                    upstream=UpstreamSettings(failures_before_backoff=1000),
                    organizations=(OrgSettings(name="hub", upstream=upstream, staleness_seconds=STALENESS,
                                               max_stale_seconds=3600),))


@contextmanager
def running(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    container = bootstrap(settings, clock=clock)
    with TestClient(create_app(container)) as client:
        client.container = container
        yield client


def recorded(client, subject: str, repository: str = "team/app"):
    return client.container.read_views["referrers"].upstream_list("hub", repository, subject)


def listed(client, subject: str) -> list[dict]:
    answer = client.get(f"/v2/hub/team/app/referrers/{subject}")
    assert answer.status_code == 200, answer.text
    return answer.json()["manifests"]


def described(artifact) -> dict:
    document = json.loads(artifact.manifest_bytes)
    return {"mediaType": artifact.media_type, "digest": artifact.digest, "size": len(artifact.manifest_bytes),
            "artifactType": document["artifactType"]}


def test_a_referrers_api_list_is_served_after_a_restart_with_the_upstream_stopped(
        request, event_store_backend, tmp_path, caplog):
    clock, url = ManualClock(), f"/v2/hub/team/app/referrers/{SUBJECT}"
    everything = [d.as_json() for d in PAGES[0] + PAGES[1]]
    server = LocalHTTPServer(referrers_api).start()
    settings = settings_on(request, event_store_backend, tmp_path, server.url)
    try:
        with running(settings, clock) as client:
            first = client.get(url)
            assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
            assert first.json()["manifests"] == everything
            until(lambda: recorded(client, SUBJECT) is not None, timeout=10, what="the recorded list in the view")
    finally:
        server.stop()
    asked = len(server.requests)

    with running(settings, clock) as client:
        fresh = client.get(url, params={"artifactType": SBOM})       # inside staleness: from the recorded list
        assert fresh.status_code == 200 and fresh.headers["x-cache"] == "HIT" and "warning" not in fresh.headers
        assert fresh.headers["oci-filters-applied"] == "artifactType"
        assert fresh.json()["manifests"] == [PAGES[1][0].as_json()]

        clock.advance(STALENESS + 1)
        with caplog.at_level(logging.INFO, logger="entrepot"):
            stale = client.get(url, params={"n": "2"})               # past it: upstream asked, down, served stale
        assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
        assert stale.headers["warning"].startswith("110 ") and "unavailable" in stale.headers["warning"]
        assert stale.json()["manifests"] == everything[:2]
        rest = client.get(re.fullmatch(r'<([^>]+)>; rel="next"', stale.headers["link"])[1])
        assert rest.json()["manifests"] == everything[2:]
        assert f"served stale: org hub repository team/app reference referrers:{SUBJECT}" in caplog.text

        clock.advance(3600)                                         # past max_stale: never without upstream
        assert client.get(url).status_code == 503
    assert len(server.requests) == asked


@pytest.fixture
def signed(upstream_registry):
    """team/app:1 and an attestation of it tagged `attestation`, with no fallback tag upstream: the cache
    learns of the attestation only by caching it."""
    image = build_image("recorded", layers=1, layer_size=1_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    attestation = build_artifact(image, IN_TOTO, b'{"_type": "statement"}')
    push_image(upstream_registry.url, "team/app", "attestation", attestation)
    return image, attestation


def test_an_evicted_referrer_leaves_the_list_until_cached_again_and_a_flush_drops_the_recorded_list(
        request, event_store_backend, tmp_path, upstream_registry, signed):
    image, attestation = signed
    settings = settings_on(request, event_store_backend, tmp_path, upstream_registry.url)

    def pull_attestation(client) -> None:
        answer = client.get("/v2/hub/team/app/manifests/attestation", headers={"Accept": OCI_MANIFEST})
        assert answer.status_code == 200

    with running(settings, ManualClock()) as client:
        assert listed(client, image.digest) == []                  # upstream lists none (no fallback tag)
        until(lambda: recorded(client, image.digest) is not None, timeout=10, what="the recorded empty list")
        pull_attestation(client)
        until(lambda: listed(client, image.digest) == [described(attestation)], timeout=10, what="the referrer")

        retention = client.container.retention
        until(lambda: retention.images("hub").images, timeout=10, what="the retention view")
        assert retention.flush("hub", "team/app", "attestation", dry_run=False, actor="test").images == 1
        # evicted: not listed, so never unservable (the flush waits for the views only briefly: under load, a moment)
        until(lambda: listed(client, image.digest) == [], timeout=10, what="the evicted referrer to leave the list")
        pull_attestation(client)                                    # cached again (Recached)
        until(lambda: listed(client, image.digest) == [described(attestation)], timeout=10, what="its return")

        # the flush reads its scope from the retention view (it waits for it 2 s at most): let it hold the re-cached
        # attestation first, or under CI's load the flush may not see it and it stays cached, and listed
        until(lambda: retention.held("hub")[0] == 1, timeout=10, what="the retention view to hold it again")
        assert retention.flush("hub", "team/app", None, dry_run=True, actor="test").dry_run
        assert recorded(client, image.digest) is not None          # a dry run drops nothing
        retention.flush("hub", "team/app", None, dry_run=False, actor="test")
        until(lambda: recorded(client, image.digest) is None, timeout=10, what="the flushed scope's lists to go")
        until(lambda: listed(client, image.digest) == [], timeout=10, what="the flushed referrer to leave the list")

    upstream_registry.stop()
    with running(settings, ManualClock()) as client:               # recorded again by the GET just above
        assert listed(client, image.digest) == []


def test_a_fallback_tag_list_is_served_after_a_restart_with_the_registry_stopped(
        request, event_store_backend, tmp_path, upstream_registry):
    """distribution 2.8 has no referrers API: after a restart the cache cannot know that without asking,
    and asking fails, so the recorded list is what answers (not only the referrers it holds, nor a 503)."""
    image = build_image("fallback", layers=1, layer_size=1_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    sbom = build_artifact(image, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
    push_image(upstream_registry.url, "team/app", None, sbom)
    push_image(upstream_registry.url, "team/app", image.digest.replace(":", "-"), referrers_index_of(sbom))
    clock, settings = ManualClock(), settings_on(request, event_store_backend, tmp_path, upstream_registry.url)
    with running(settings, clock) as client:
        assert listed(client, image.digest) == [described(sbom)]
        until(lambda: recorded(client, image.digest) is not None, timeout=10, what="the recorded list")
    upstream_registry.stop()
    with running(settings, clock) as client:
        clock.advance(STALENESS + 1)
        stale = client.get(f"/v2/hub/team/app/referrers/{image.digest}", params={"artifactType": SBOM})
        assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
        assert stale.json()["manifests"] == [described(sbom)] and stale.headers["warning"].startswith("110 ")


# -- the view itself: live and rebuilt from the events --------------------------------------------------

ORG, REPO = "hub", "team/app"
M1, M2, M3, SIG, SIG2 = ("sha256:" + c * 64 for c in "12389")
UPSTREAM_SIG = Descriptor(OCI_MANIFEST, "sha256:" + "7" * 64, 700, "application/x.sig", {"k": "v"})


@pytest.fixture
def env(env_factory):
    return env_factory("main")


def history(records: CacheRecords) -> None:
    records.apply_org(ORG, {"upstream": "docker.io"})
    records.apply_org("gone", {"upstream": "quay.io"})
    sig = Referrer(M1, "application/x.sig", {"a": "b"})
    records.record_manifest(ORG, REPO, SIG, OCI_MANIFEST, 400, [], [], 10.0, referrer=sig)
    records.record_manifest(ORG, REPO, SIG2, OCI_MANIFEST, 500, [], [], 11.0, referrer=sig)
    records.evict_image(ORG, REPO, SIG2, children=[], tags=[], bytes=500, reason="quota", policy="lru",
                        actor="system:evictor", at=12.0)
    records.record_referrers(ORG, REPO, M1, as_recorded([UPSTREAM_SIG]), 20.0, shown=False)
    records.record_referrers(ORG, REPO, M1, as_recorded([UPSTREAM_SIG]), 80.0, shown=True)    # revalidated
    records.record_referrers(ORG, "other/app", M2, as_recorded([UPSTREAM_SIG]), 20.0, shown=False)
    records.record_flush(ORG, "other/app", "", dry_run=False, images=0, tags=0, blobs=0, bytes=0, actor="a", at=30.0)
    records.record_referrers("gone", REPO, M1, as_recorded([UPSTREAM_SIG]), 20.0, shown=False)
    records.delete_org("gone")
    # Subjects that are cached images: a flush of one (by its tag) drops its list, a quota eviction does not.
    for subject, reason in ((M2, "flush"), (M3, "quota")):
        records.record_manifest(ORG, REPO, subject, OCI_MANIFEST, 300, [], [], 40.0)
        records.record_referrers(ORG, REPO, subject, as_recorded([UPSTREAM_SIG]), 40.0, shown=False)
        records.evict_image(ORG, REPO, subject, children=[], tags=[], bytes=300, reason=reason, policy="",
                            actor="admin", at=41.0)


def test_the_referrers_view_lists_held_referrers_and_recorded_lists_and_a_rebuild_gives_the_same(env):
    records = CacheRecords(env=env)
    runners = projection_runners(env).start()
    view = open_view("referrers", env)
    try:
        history(records)
        runners.wait_caught_up(timeout=10)
        runners.stop()

        def state() -> tuple:
            return (view.referrers(ORG, REPO, M1), view.upstream_list(ORG, REPO, M1),
                    view.upstream_list(ORG, "other/app", M2), view.upstream_list("gone", REPO, M1),
                    view.upstream_list(ORG, REPO, M2), view.upstream_list(ORG, REPO, M3))
        live = state()
        assert live[0] == [Descriptor(OCI_MANIFEST, SIG, 400, "application/x.sig", {"a": "b"})]   # SIG2 evicted
        assert (live[1].descriptors, live[1].checked_at) == ([UPSTREAM_SIG], 80.0)
        assert live[2:5] == (None, None, None)           # flushed repository, deleted org, flushed subject
        assert live[5].descriptors == [UPSTREAM_SIG]     # a quota eviction of the subject keeps its list
        dump = view.dump()
        assert rebuild("referrers", env)
        assert state() == live and view.dump() == dump
    finally:
        runners.stop()
        view.close()
        records.close()
