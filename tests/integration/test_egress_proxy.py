"""Behind a company's egress proxy: upstream requests go through a real forward proxy (tinyproxy), the
exceptions go direct, the environment's HTTP(S)_PROXY is honoured, and the SSRF guard still applies."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from application.errors import UpstreamRefused
from application.ports import UpstreamTarget
from infra.settings import OrgSettings, Settings, UpstreamSettings
from infra.upstream import HttpUpstream
from infra.upstream.egress import EgressProxy
from infra.upstream.guard import UpstreamGuard
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.images import build_image, push_image
from tests.support.peers import TinyProxy

pytestmark = pytest.mark.integration
REPOSITORY, TAG = "library/alpine", "3.19"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def proxy(tmp_path):
    directory = tmp_path / "proxy"
    directory.mkdir()
    proxy = TinyProxy(directory).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def image(upstream_registry):
    image = build_image("egress", layers=2, layer_size=200_000)
    push_image(upstream_registry.url, REPOSITORY, TAG, image)
    upstream_registry.mark()
    return image


def pull(tmp_path, upstream_registry, image, upstream: UpstreamSettings) -> None:
    """A whole pull through Entrepôt (manifest and every blob), bytes checked."""
    settings = Settings(data_dir=str(tmp_path / "data"), upstream=upstream,
                        organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),))
    with TestClient(create_app(bootstrap(settings))) as api:
        manifest = api.get(f"/v2/hub/{REPOSITORY}/manifests/{TAG}", headers={"Accept": image.media_type})
        assert (manifest.status_code, manifest.content) == (200, image.manifest_bytes)
        for digest, data in image.blobs.items():
            blob = api.get(f"/v2/hub/{REPOSITORY}/blobs/{digest}")
            assert (blob.status_code, blob.content == data) == (200, True)


def carried_to(proxy: TinyProxy, upstream_registry) -> list[str]:
    return [line for line in proxy.requests() if upstream_registry.url in line]


def test_with_a_proxy_set_every_upstream_request_goes_through_it(tmp_path, upstream_registry, image, proxy):
    pull(tmp_path, upstream_registry, image, UpstreamSettings(proxy=proxy.url))
    carried = carried_to(proxy, upstream_registry)
    assert f"GET {upstream_registry.url}/v2/{REPOSITORY}/manifests/{TAG} HTTP/1.1" in carried
    for digest in image.blobs:
        assert f"GET {upstream_registry.url}/v2/{REPOSITORY}/blobs/{digest} HTTP/1.1" in carried
    # ... and nothing reached the registry without it: its access log holds only the proxied requests.
    assert len(upstream_registry.requests()) == len(carried)


def test_no_proxy_hosts_are_reached_directly(tmp_path, upstream_registry, image, proxy):
    pull(tmp_path, upstream_registry, image, UpstreamSettings(proxy=proxy.url, no_proxy=("localhost", "127.0.0.0/8")))
    assert carried_to(proxy, upstream_registry) == []
    assert upstream_registry.requests()


def test_the_environment_proxy_is_honoured_unless_the_settings_say_none(tmp_path, upstream_registry, image, proxy,
                                                                       monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    pull(tmp_path / "env", upstream_registry, image, UpstreamSettings())
    through_env = len(carried_to(proxy, upstream_registry))
    assert through_env > 0

    pull(tmp_path / "none", upstream_registry, image, UpstreamSettings(proxy="none"))
    assert len(carried_to(proxy, upstream_registry)) == through_env


@pytest.mark.anyio
async def test_behind_a_proxy_the_ssrf_guard_still_refuses_internal_addresses(upstream_registry, image, proxy):
    # An org made through the admin API (no allowed networks): loopback is internal, refused before any byte leaves.
    guard = UpstreamGuard(operator_upstreams=())
    target = UpstreamTarget("evil", upstream_registry.url, REPOSITORY)
    async with HttpUpstream(guard=guard, egress=EgressProxy(http=proxy.url, https=proxy.url)) as upstream:
        with pytest.raises(UpstreamRefused):
            await upstream.get_manifest(target, TAG, [image.media_type])
    assert carried_to(proxy, upstream_registry) == []
