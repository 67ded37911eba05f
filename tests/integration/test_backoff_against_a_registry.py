"""The upstream back-off against a real registry behind a fault proxy: one client failing one repository over and
over cannot put the upstream into back-off for everyone; failures across repositories do."""

from __future__ import annotations

import httpx
import pytest

from infra.settings import OrgSettings, Settings, UpstreamSettings
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    """One registry for the module, only pulled from; each test has its own proxy and app."""
    registry = module_upstream_registry_factory()
    image = build_image("backoff-ratio")
    push_image(registry.url, "team/app", "1", image)
    return registry, image


@pytest.fixture
def proxied(upstream, tmp_path):
    # The app in this process (no process behaviour is tested here): back-off is state of the app.
    registry, image = upstream
    with FaultProxy(registry.url) as proxy, InProcessServer(Settings(
            data_dir=str(tmp_path / "data"), organizations=(OrgSettings(name="org", upstream=proxy.url),),
            upstream=UpstreamSettings(backoff_seconds=60))) as server:
        yield server, proxy, image


def test_one_repository_answered_500_again_and_again_does_not_put_the_upstream_into_back_off(proxied):
    server, proxy, image = proxied
    proxy.add(Fault(r"/v2/team/choking/", status=500, times=None))
    for _ in range(12):
        response = httpx.get(f"{server.url}/v2/org/team/choking/manifests/1", timeout=10)
        assert response.status_code == 503 and "treated as unavailable" not in response.text
    assert len([r for r in proxy.requests if "/team/choking/" in r[1]]) == 12   # each one was really asked
    response = httpx.get(f"{server.url}/v2/org/team/app/manifests/1", timeout=10)
    assert response.status_code == 200 and response.content == image.manifest_bytes


def test_failures_across_repositories_put_the_upstream_into_back_off(proxied):
    server, proxy, image = proxied
    proxy.add(Fault(r"/v2/team/", status=503, times=None))
    for repository in ("one", "two", "three"):
        assert httpx.get(f"{server.url}/v2/org/team/{repository}/manifests/1", timeout=10).status_code == 503
    asked = len(proxy.requests)
    during = httpx.get(f"{server.url}/v2/org/team/app/manifests/1", timeout=10)
    assert during.status_code == 503 and "treated as unavailable" in during.json()["errors"][0]["message"]
    assert len(proxy.requests) == asked   # answered without asking the upstream
