"""bootstrap() builds the app from settings, with what a test passes in instead: an upstream, a clock."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from infra.settings import OrgSettings, Settings, UpstreamSettings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.clock import ManualClock
from tests.support.images import build_image
from tests.unit.fakes import FakeUpstream

pytestmark = pytest.mark.integration   # the event store and views are real (SQLite files)


def test_an_injected_upstream_and_clock_drive_a_pull_through_the_whole_app(tmp_path):
    upstream, clock = FakeUpstream(), ManualClock()
    old, new = build_image("root"), build_image("root", revision=1)
    upstream.put_manifest("team/app", "1", old.manifest_bytes, old.media_type)
    settings = Settings(data_dir=str(tmp_path / "data"), organizations=(
        OrgSettings(name="org", upstream="http://upstream.invalid", staleness_seconds=60),),
        upstream=UpstreamSettings(prefetch_blobs=0))   # the upstream's calls are the client's own
    url, accept = "/v2/org/team/app/manifests/1", {"Accept": old.media_type}
    with TestClient(create_app(bootstrap(settings, upstream=upstream, clock=clock))) as api:
        first = api.get(url, headers=accept)
        assert (first.status_code, first.headers["x-cache"], first.content) == (200, "MISS", old.manifest_bytes)
        upstream.put_manifest("team/app", "1", new.manifest_bytes, new.media_type)
        assert api.get(url, headers=accept).content == old.manifest_bytes     # fresh for 60 s
        clock.advance(61)
        assert api.get(url, headers=accept).content == new.manifest_bytes     # stale: revalidated upstream
    assert [call for call in upstream.calls if call[0] == "GET"] == [("GET", "team/app", "1")] * 2
