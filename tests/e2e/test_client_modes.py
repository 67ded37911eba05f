"""End to end: every client mode against one running `entrepot serve` — containerd hosts.toml (both ways),
podman registries.conf (whole registry and one namespace), and root paths as the Docker daemon sends them.

Each test records the request paths the cache answered (its access log) and asserts their shape; run with
`-s` to see them printed.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.access_log import AccessLog
from tests.support.clients import Podman, write_registries_conf
from tests.support.components import require
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token"
IMAGES = {name: build_image(f"modes/{name}", layers=2, layer_size=50_000)
          for name in ("ctr-override", "ctr-bare", "ctr-team", "podman-whole", "podman-ns", "dockerd")}
DOCKER_ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, "
                 "application/vnd.docker.distribution.manifest.list.v2+json, "
                 "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    for name, image in IMAGES.items():
        repository = "team/ctr-team" if name == "ctr-team" else f"library/{name}"
        push_image(registry.url, repository, "1.0", image)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    # hub mirrors the whole upstream and serves root paths; lib mirrors only its `library` namespace.
    return module_entrepot_server_factory([
        {"name": "hub", "upstream": upstream.url, "default": True},
        {"name": "lib", "upstream": upstream.url, "namespace": "library"},
    ], access_log=True, env={"ENTREPOT_ADMIN_TOKEN": TOKEN})


@pytest.fixture
def access_log(server) -> AccessLog:
    log = AccessLog(server.log_path)
    log.mark()
    return log


@pytest.fixture(scope="module")
def containerd():
    require("containerd", "ctr")
    with Containerd() as daemon:
        yield daemon


@pytest.fixture
def podman(tmp_path):
    require("podman")
    with Podman(tmp_path / "podman") as client:
        yield client


def show(mode: str, requests: list[tuple[str, str, int]]) -> None:
    print(f"\n{mode}: requests the cache answered")
    for method, path, status in requests:
        print(f"  {method:4} {path} -> {status}")


def audited_orgs(server, user_agent: str, repository: str) -> set[str]:
    response = httpx.get(f"{server.url}/api/v1/audit", params={"user_agent": user_agent, "repository": repository},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return {row["org"] for row in response.json()["items"]}


def without_ping(requests: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [request for request in requests if request[1].rstrip("/") != "/v2"]


def assert_whole_image_served(requests, prefix: str, name: str, query: str = "") -> None:
    image = IMAGES[name]
    assert all(status == 200 for _, _, status in requests), requests
    paths = {path for _, path, _ in requests}
    assert {f"{prefix}/blobs/{digest}{query}" for digest in image.blobs} <= paths
    assert any(path.startswith(f"{prefix}/manifests/") for path in paths)


# ---------------------------------------------------------------------------------------------- containerd


def test_containerd_pulls_through_a_path_override_mirror(containerd, upstream, server, access_log, tmp_path):
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, upstream.host, f"http://{server.host}/v2/hub", override_path=True)
    reference = f"{upstream.host}/library/ctr-override:1.0"

    containerd.pull(reference, hosts)

    requests = access_log.requests()
    show("containerd, override_path = true, host http://HOST/v2/hub", requests)
    ns = f"?ns={upstream.host}"
    assert requests[0] == ("HEAD", f"/v2/hub/library/ctr-override/manifests/1.0{ns}", 200)
    assert_whole_image_served(requests, "/v2/hub/library/ctr-override", "ctr-override", ns)
    assert all(path.startswith("/v2/hub/") and path.endswith(ns) for _, path, _ in requests)
    assert containerd.image_digest(reference) == IMAGES["ctr-override"].manifest_digest
    assert audited_orgs(server, "containerd", "library/ctr-override") == {"hub"}


def test_containerd_pulls_through_a_bare_host_mirror_routed_by_ns(containerd, upstream, server, access_log, tmp_path):
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, upstream.host, f"http://{server.host}")
    in_namespace = f"{upstream.host}/library/ctr-bare:1.0"
    outside = f"{upstream.host}/team/ctr-team:1.0"

    containerd.pull(in_namespace, hosts)
    containerd.pull(outside, hosts)

    requests = access_log.requests()
    show("containerd, bare host http://HOST (routed by ?ns=)", requests)
    ns = f"?ns={upstream.host}"
    assert requests[0] == ("HEAD", f"/v2/library/ctr-bare/manifests/1.0{ns}", 200)
    assert_whole_image_served(requests, "/v2/library/ctr-bare", "ctr-bare", ns)
    assert_whole_image_served(requests, "/v2/team/ctr-team", "ctr-team", ns)
    assert all(path.endswith(ns) for _, path, _ in requests)
    assert containerd.image_digest(in_namespace) == IMAGES["ctr-bare"].manifest_digest
    assert containerd.image_digest(outside) == IMAGES["ctr-team"].manifest_digest
    # library/... belongs to the org bound to that namespace; anything else to the whole-registry org.
    assert audited_orgs(server, "containerd", "ctr-bare") == {"lib"}
    assert audited_orgs(server, "containerd", "team/ctr-team") == {"hub"}


# ---------------------------------------------------------------------------------------------- podman


def test_podman_pulls_through_a_whole_registry_mirror(podman, server, access_log, tmp_path):
    conf = write_registries_conf(tmp_path / "registries.conf", mirror=f"{server.host}/hub", prefix="docker.io")

    podman.pull("docker.io/library/podman-whole:1.0", tls_verify=True, registries_conf=conf)

    requests = access_log.requests()
    show('podman, registries.conf prefix "docker.io", mirror HOST/hub', requests)
    assert ("GET", "/v2/hub/library/podman-whole/manifests/1.0", 200) in requests
    assert_whole_image_served(without_ping(requests), "/v2/hub/library/podman-whole", "podman-whole")
    assert IMAGES["podman-whole"].manifest_digest in podman.image_digests("docker.io/library/podman-whole:1.0")
    assert audited_orgs(server, "containers", "library/podman-whole") == {"hub"}


def test_podman_pulls_through_a_namespace_mirror(podman, server, access_log, tmp_path):
    conf = write_registries_conf(tmp_path / "registries.conf", mirror=f"{server.host}/lib",
                                 prefix="docker.io/library")

    podman.pull("docker.io/library/podman-ns:1.0", tls_verify=True, registries_conf=conf)

    requests = access_log.requests()
    show('podman, registries.conf prefix "docker.io/library", mirror HOST/lib', requests)
    assert ("GET", "/v2/lib/podman-ns/manifests/1.0", 200) in requests
    assert_whole_image_served(without_ping(requests), "/v2/lib/podman-ns", "podman-ns")
    assert IMAGES["podman-ns"].manifest_digest in podman.image_digests("docker.io/library/podman-ns:1.0")
    assert audited_orgs(server, "containers", "podman-ns") == {"lib"}


# ---------------------------------------------------------------------------------------------- Docker daemon


def test_root_paths_as_the_docker_daemon_sends_them_are_served_by_the_default_org(server, access_log):
    image = IMAGES["dockerd"]
    headers = {"User-Agent": "docker/24.0.7 go/go1.20.10 (registry-mirrors test)"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as docker:
        assert docker.get("/v2/").status_code == 200
        head = docker.head("/v2/library/dockerd/manifests/1.0", headers={"Accept": DOCKER_ACCEPT})
        manifest = docker.get(f"/v2/library/dockerd/manifests/{head.headers['docker-content-digest']}",
                              headers={"Accept": DOCKER_ACCEPT})
        blobs = {digest: docker.get(f"/v2/library/dockerd/blobs/{digest}").content for digest in image.blobs}

    requests = access_log.requests()
    show("Docker daemon registry-mirrors (root paths, default org hub)", requests)
    assert head.headers["docker-content-digest"] == image.manifest_digest
    assert manifest.content == image.manifest_bytes and blobs == image.blobs
    assert_whole_image_served(without_ping(requests), "/v2/library/dockerd", "dockerd")
    assert audited_orgs(server, "docker/24", "library/dockerd") == {"hub"}
