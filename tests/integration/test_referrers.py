"""OCI 1.1 referrers through the cache, against a real upstream: distribution 2.8 (no referrers API, so
the fallback tag `sha256-<hex>`), and a scripted upstream that implements the spec's referrers answer."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from litestar.testing import TestClient

from application.ports import UpstreamTarget
from infra.projection_runtime import open_view
from infra.settings import OrgSettings, Settings
from infra.upstream.client import HttpUpstream
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.clock import ManualClock
from tests.support.httpserver import LocalHTTPServer
from tests.support.images import build_artifact, build_image, push_image, referrers_index_of
from tests.support.referrers_api import PAGES, SBOM, SUBJECT, referrers_api
from tests.support.views import wait_for_rows

pytestmark = pytest.mark.integration
INDEX = "application/vnd.oci.image.index.v1+json"
COSIGN = "application/vnd.dev.cosign.simplesigning.v1+json"
STALENESS = 60


def fallback(digest: str) -> str:
    return digest.replace(":", "-")


@pytest.fixture
def signed(upstream_registry):
    """team/app:1 with a signature and an SBOM, listed under its fallback tag as cosign/oras keep it."""
    image = build_image("signed", layers=1, layer_size=2_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    signature = build_artifact(image, COSIGN, b'{"critical": {}}', {"dev.cosignproject.cosign/signature": "MEUC"})
    sbom = build_artifact(image, SBOM, b'{"spdxVersion": "SPDX-2.3"}', {"org.opencontainers.image.created": "2026"})
    for artifact in (signature, sbom):
        push_image(upstream_registry.url, "team/app", None, artifact)
    push_image(upstream_registry.url, "team/app", f"{fallback(image.digest)}.sig", signature)   # cosign's own tag
    push_image(upstream_registry.url, "team/app", fallback(image.digest), referrers_index_of(signature, sbom))
    return image, signature, sbom


@pytest.fixture
def cache(tmp_path, upstream_registry):
    clock = ManualClock()
    container = bootstrap(Settings(data_dir=str(tmp_path / "data"), organizations=(
        OrgSettings(name="hub", upstream=upstream_registry.url, staleness_seconds=STALENESS,
                    max_stale_seconds=3600),)), clock=clock)
    with TestClient(create_app(container)) as client:
        client.container, client.clock = container, clock
        yield client


def described(artifact) -> dict:
    document = json.loads(artifact.manifest_bytes)
    out = {"mediaType": artifact.media_type, "digest": artifact.digest, "size": len(artifact.manifest_bytes),
           "artifactType": document["artifactType"]}
    return {**out, "annotations": document["annotations"]} if document.get("annotations") else out


def audit_of(container, count: int) -> list[tuple[str, str]]:
    view = open_view("audit", container.env)
    try:
        return [(row.reference, row.result) for row in wait_for_rows(view, count)]
    finally:
        view.close()


def test_referrers_of_a_signed_image_come_from_the_fallback_tag_filtered_paged_and_stale_after_upstream_stops(
        cache, signed, upstream_registry):
    image, signature, sbom = signed
    url = f"/v2/hub/team/app/referrers/{image.digest}"
    first = cache.get(url)
    assert first.status_code == 200 and first.headers["content-type"] == INDEX
    assert first.json() == {"schemaVersion": 2, "mediaType": INDEX, "manifests": [described(signature), described(sbom)]}
    assert first.headers["x-cache"] == "MISS" and "oci-filters-applied" not in first.headers

    only_signatures = cache.get(url, params={"artifactType": COSIGN})
    assert only_signatures.headers["oci-filters-applied"] == "artifactType"
    assert only_signatures.json()["manifests"] == [described(signature)]
    assert only_signatures.headers["x-cache"] == "HIT"       # the list is held for the org's staleness

    paged = cache.get(url, params={"n": "1"})
    assert paged.json()["manifests"] == [described(signature)]
    link = re.fullmatch(r'<([^>]+)>; rel="next"', paged.headers["link"])[1]
    rest = cache.get(link)
    assert rest.json()["manifests"] == [described(sbom)] and "link" not in rest.headers

    head = cache.head(url)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(first.content)

    cache.container.runners.wait_caught_up(timeout=30)   # the list is in the referrers view (as it is by
    upstream_registry.stop()                               # the time a real staleness period has passed)
    cache.clock.advance(STALENESS + 1)
    stale = cache.get(url, params={"artifactType": COSIGN})
    assert stale.status_code == 200 and stale.json()["manifests"] == [described(signature)]
    assert stale.headers["x-cache"] == "STALE" and stale.headers["warning"].startswith("110 ")

    # Each GET is a pull of its own kind in the audit log (the HEAD is not a pull).
    reference = f"referrers:{image.digest}"
    assert audit_of(cache.container, 5) == [(reference, "miss"), (reference, "hit"), (reference, "hit"),
                                            (reference, "hit"), (reference, "stale")]


def test_cosign_style_fallback_tags_are_ordinary_tags_and_artifacts_are_ordinary_manifests(cache, signed):
    image, signature, _ = signed
    by_tag = cache.get(f"/v2/hub/team/app/manifests/{fallback(image.digest)}.sig",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert by_tag.status_code == 200 and by_tag.content == signature.manifest_bytes
    assert by_tag.headers["docker-content-digest"] == signature.digest
    for digest, data in signature.blobs.items():           # the empty config `{}` and the payload
        blob = cache.get(f"/v2/hub/team/app/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == data
    index = cache.get(f"/v2/hub/team/app/manifests/{fallback(image.digest)}", headers={"Accept": INDEX})
    assert index.status_code == 200 and index.headers["content-type"] == INDEX
    assert [m["digest"] for m in index.json()["manifests"]] == [signature.digest, _.digest]


def test_a_subject_whose_referrers_the_cache_learned_only_from_manifests_it_cached(cache, upstream_registry):
    image = build_image("unlisted", layers=1, layer_size=1_000)
    push_image(upstream_registry.url, "team/app", "2", image)
    attestation = build_artifact(image, "application/vnd.in-toto+json", b'{"_type": "statement"}')
    push_image(upstream_registry.url, "team/app", "attestation", attestation)   # no fallback tag upstream
    url = f"/v2/hub/team/app/referrers/{image.digest}"
    assert cache.get(url).json()["manifests"] == []          # upstream lists none, the cache holds none yet
    assert cache.get("/v2/hub/team/app/manifests/attestation",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
    deadline = time.monotonic() + 10
    while not (listed := cache.get(url).json()["manifests"]) and time.monotonic() < deadline:
        time.sleep(0.05)                                     # the referrers view trails the event store
    assert listed == [described(attestation)]


def test_bad_referrers_requests_are_400_and_reach_no_upstream(cache, upstream_registry):
    upstream_registry.mark()
    for path, code in (("/v2/hub/team/app/referrers/sha256:abc", "DIGEST_INVALID"),
                       ("/v2/hub/team/app/referrers/latest", "DIGEST_INVALID"),
                       ("/v2/hub/team/app/referrers/sha256:" + "0" * 64 + "?n=-1", "PAGINATION_NUMBER_INVALID")):
        answer = cache.get(path)
        assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == code, path
    assert upstream_registry.requests() == []


# -- an upstream with the referrers API (distribution-spec 1.1, "Listing Referrers") -------------------

def test_the_upstream_client_reads_every_page_of_a_referrers_api():
    async def read(url):
        async with HttpUpstream() as upstream:
            return await upstream.get_referrers(UpstreamTarget("hub", url, "team/app"), SUBJECT)
    with LocalHTTPServer(referrers_api) as server:
        answer = asyncio.run(read(server.url))
    assert answer.descriptors == PAGES[0] + PAGES[1]
    assert [r.path for r in server.requests] == [f"/v2/team/app/referrers/{SUBJECT}",
                                                  f"/v2/team/app/referrers/{SUBJECT}?page=2"]
    assert server.requests[0].headers["accept"] == INDEX


def test_through_the_cache_an_upstream_referrers_api_is_used_instead_of_the_fallback_tag(tmp_path):
    with LocalHTTPServer(referrers_api) as server:
        container = bootstrap(Settings(data_dir=str(tmp_path / "data"),
                                       organizations=(OrgSettings(name="hub", upstream=server.url),)))
        with TestClient(create_app(container)) as client:
            answer = client.get(f"/v2/hub/team/app/referrers/{SUBJECT}", params={"artifactType": SBOM})
            everything = client.get(f"/v2/hub/team/app/referrers/{SUBJECT}")
        assert answer.status_code == 200 and answer.headers["oci-filters-applied"] == "artifactType"
        assert answer.json()["manifests"] == [PAGES[1][0].as_json()]
        assert everything.json()["manifests"] == [d.as_json() for d in PAGES[0] + PAGES[1]]
        assert "artifactType" not in everything.json()["manifests"][2]     # an index without one has none
        assert not [r for r in server.requests if "manifests/" in r.path]  # no fallback tag asked for
