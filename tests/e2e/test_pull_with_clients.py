"""End to end: a real `entrepot serve` in front of a real docker-registry, pulled from with skopeo and podman.

Every image is built by tests/support/images.py, so the bytes the clients receive through the cache can be
compared with the builder's bytes: a cache that re-serialises a manifest or alters a blob changes a digest.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.cli import run_in_process
from tests.support.clients import DirImage, Podman, run, skopeo_copy, skopeo_copy_command, write_registries_conf
from tests.support.components import require
from tests.support.images import Image, Index, build_image, build_index, push_image

pytestmark = pytest.mark.e2e

# What the upstream holds: (repository, tag, image). One-word Docker Hub names live under library/.
ALPINE = build_image("e2e/alpine", layers=3, layer_size=200_000)
BUSYBOX_OCI = build_image("e2e/busybox", layers=2, layer_size=100_000, oci=True)
MULTI = build_index("e2e/multi", layers=2, layer_size=100_000)
IMAGES = [("library/alpine", "3.19", ALPINE), ("library/busybox", "1.36", BUSYBOX_OCI), ("library/multi", "1.0", MULTI)]

LOCAL_PLATFORM = "amd64"   # the platform podman picks from an index on this machine kind (x86_64)


def assert_same_image(pulled: DirImage, built: Image | Index) -> None:
    """The manifest (and, for an index, every platform manifest) and every blob byte for byte as built."""
    assert pulled.manifest == built.manifest_bytes, "the manifest bytes changed on the way through the cache"
    if isinstance(built, Index):
        expected_instances = {child.manifest_digest: child.manifest_bytes for child in built.children}
        assert set(pulled.instances) == set(expected_instances)
        for digest, data in expected_instances.items():
            assert pulled.instances[digest] == data, f"platform manifest {digest} changed"
    assert set(pulled.blobs) == set(built.blobs), "the client did not fetch exactly the image's blobs"
    for digest, data in built.blobs.items():
        assert pulled.blobs[digest] == data, f"blob {digest} changed"


def pull_dir(reference: str, destination: Path, **options) -> DirImage:
    skopeo_copy(reference, destination, **options)
    return DirImage.read(destination)


def platform_child(index: Index, architecture: str) -> Image:
    return next(child for child in index.children if child.platform["architecture"] == architecture)


def projection_rows(server) -> list[dict]:
    # In the test process: polled below, and an interpreter start per poll costs seconds under load.
    result = run_in_process("projections", "status", "--json", "--config", str(server.config_path), env={})
    assert result.returncode == 0, f"projections status failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def wait_for_zero_lag(server, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = projection_rows(server)
        if all(row["lag"] == 0 for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"projections still lag after {timeout}s: {rows}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    for repository, tag, image in IMAGES:
        push_image(registry.url, repository, tag, image)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    # --access-log: the audit test counts the manifest GETs the server answered.
    return module_entrepot_server_factory([{"name": "hub", "upstream": upstream.url}], access_log=True)


@pytest.fixture
def skopeo():
    require("skopeo")


@pytest.fixture
def podman(tmp_path) -> Podman:
    require("podman")
    with Podman(tmp_path / "podman") as client:
        yield client


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("repository, tag, image", [IMAGES[0], IMAGES[1]], ids=["docker-v2", "oci"])
def test_skopeo_pulls_a_single_arch_image_through_the_explicit_path(skopeo, server, tmp_path, repository, tag, image):
    pulled = pull_dir(f"docker://{server.host}/hub/{repository}:{tag}", tmp_path / "image")

    assert_same_image(pulled, image)


def test_skopeo_pulls_a_multi_arch_index_and_its_platform_manifests_by_digest(skopeo, server, tmp_path):
    pulled = pull_dir(f"docker://{server.host}/hub/library/multi:1.0", tmp_path / "image", all_images=True)

    assert_same_image(pulled, MULTI)
    assert len(pulled.instances) == len(MULTI.children) == 2


def test_skopeo_pulls_through_a_registries_conf_mirror(skopeo, server, tmp_path):
    conf = write_registries_conf(tmp_path / "registries.conf", mirror=f"{server.host}/hub")

    # No --src-tls-verify flag: `insecure = true` on the mirror is what allows plain http.
    pulled = pull_dir("docker://docker.io/library/alpine:3.19", tmp_path / "image", registries_conf=conf,
                      tls_verify=True)

    assert_same_image(pulled, ALPINE)


def test_podman_pulls_explicitly_and_through_a_registries_conf_mirror(podman, server, tmp_path):
    explicit = f"{server.host}/hub/library/alpine:3.19"
    podman.pull(explicit)

    assert podman.listed_digests()[explicit] == ALPINE.manifest_digest
    assert ALPINE.manifest_digest in podman.image_digests(explicit)

    conf = write_registries_conf(tmp_path / "registries.conf", mirror=f"{server.host}/hub")
    podman.pull("docker.io/library/busybox:1.36", tls_verify=True, registries_conf=conf)

    assert podman.listed_digests()["docker.io/library/busybox:1.36"] == BUSYBOX_OCI.manifest_digest
    assert BUSYBOX_OCI.manifest_digest in podman.image_digests("docker.io/library/busybox:1.36")


def test_cached_images_are_still_pulled_when_the_upstream_registry_is_stopped(
        skopeo, module_upstream_registry_factory, module_entrepot_server_factory, tmp_path):
    require("podman")
    # A dedicated upstream, stopped for good below, so no other test depends on the order they run in.
    upstream = module_upstream_registry_factory()
    single = build_image("e2e/offline", layers=3, layer_size=200_000)
    multi = build_index("e2e/offline-multi", layers=2, layer_size=100_000)
    push_image(upstream.url, "library/offline", "1.0", single)
    push_image(upstream.url, "library/offline-multi", "1.0", multi)
    # hub serves tags as fresh (no upstream contact); hot must revalidate on every pull, so with the upstream
    # down it can only answer from the cache as stale.
    server = module_entrepot_server_factory([
        {"name": "hub", "upstream": upstream.url, "staleness_seconds": 300},
        {"name": "hot", "upstream": upstream.url, "staleness_seconds": 0, "max_stale_seconds": 3600},
    ])
    references = [(f"{org}/library/{name}:1.0", image) for org in ("hub", "hot")
                  for name, image in (("offline", single), ("offline-multi", multi))]
    local_child = platform_child(multi, LOCAL_PLATFORM)

    def pull_everything(round_name: str) -> None:
        for number, (reference, image) in enumerate(references):
            destination = tmp_path / round_name / str(number)
            pulled = pull_dir(f"docker://{server.host}/{reference}", destination, all_images=isinstance(image, Index))
            assert_same_image(pulled, image)
        with Podman(tmp_path / round_name / "podman") as podman:   # a fresh store: podman fetches every blob again
            for reference, image in references:
                podman.pull(f"{server.host}/{reference}")
                expected = local_child.manifest_digest if isinstance(image, Index) else image.manifest_digest
                assert expected in podman.image_digests(f"{server.host}/{reference}"), reference

    pull_everything("warm")
    upstream.stop()
    pull_everything("upstream-down")

    answer = httpx.get(f"{server.url}/v2/hot/library/offline/manifests/1.0",
                       headers={"Accept": single.media_type}, timeout=10)
    assert answer.status_code == 200 and answer.content == single.manifest_bytes
    assert answer.headers["X-Cache"] == "STALE"
    assert "Warning" in answer.headers


def test_twenty_concurrent_pulls_of_a_cold_image_fetch_each_blob_once_upstream(skopeo, upstream, server, tmp_path,
                                                                                record_property):
    cold = build_image(f"e2e/cold/{uuid.uuid4()}", layers=4, layer_size=1_000_000)
    repository = f"library/cold-{uuid.uuid4().hex[:12]}"
    push_image(upstream.url, repository, "1.0", cold)
    upstream.mark()

    destinations = [tmp_path / f"copy{n:02d}" for n in range(20)]
    processes = []
    for destination in destinations:
        log = open(tmp_path / f"{destination.name}.log", "wb")
        command = skopeo_copy_command(f"docker://{server.host}/hub/{repository}:1.0", destination)
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL), log, destination))
    failures = []
    for process, log, destination in processes:
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.close()
        if code != 0:
            failures.append(f"{destination.name}: exit {code}\n{Path(log.name).read_text(errors='replace')[-1500:]}")
    assert not failures, "\n".join(failures)

    for destination in destinations:
        assert_same_image(DirImage.read(destination), cold)

    blob_gets = {digest: upstream.count("GET", f"/blobs/{digest}") for digest in cold.blobs}
    manifest_gets = upstream.count("GET", "/manifests/")
    manifest_heads = upstream.count("HEAD", "/manifests/")
    print(f"\nupstream requests for 20 concurrent cold pulls of {repository}:1.0")
    for digest, count in blob_gets.items():
        kind = "config" if digest == cold.config.digest else "layer "
        print(f"  GET blob {kind} {digest[:19]}… ({len(cold.blobs[digest]):>9,} bytes): {count}")
    print(f"  GET manifests: {manifest_gets}   HEAD manifests: {manifest_heads}")
    record_property("upstream_blob_gets", blob_gets)
    record_property("upstream_manifest_gets", manifest_gets)

    assert blob_gets == {digest: 1 for digest in cold.blobs}, f"upstream blob GETs: {blob_gets}"


# A line of the access log: ... entrepot.access: 127.0.0.1:51234 - "GET /v2/hub/x/manifests/1.0 HTTP/1.1" 200 1638 0.004s
MANIFEST_GET_LINE = re.compile(r'"GET /v2/\S+/manifests/\S+ HTTP/[\d.]+" 200\b')


def test_every_manifest_get_is_in_the_audit_log(skopeo, server, tmp_path):
    # Every manifest GET the server answered becomes one Pull event, and every projection (the audit
    # log among them) catches up with all of them within a few seconds. Counted as Pull rows of the
    # audit log: the Pulls application also records traffic reports, so its head is not a pull count.
    token = (server.data_dir / "admin.token").read_text().strip()

    def audited() -> int:
        response = httpx.get(f"{server.url}/api/v1/audit", params={"limit": 1000},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        response.raise_for_status()
        return len(response.json()["items"])

    def manifest_gets() -> int:
        return len(MANIFEST_GET_LINE.findall(server.log_path.read_text(errors="replace")))

    wait_for_zero_lag(server)
    before_audited, before_gets = audited(), manifest_gets()

    pull_dir(f"docker://{server.host}/hub/library/alpine:3.19", tmp_path / "alpine")
    pull_dir(f"docker://{server.host}/hub/library/busybox:1.36", tmp_path / "busybox")
    pull_dir(f"docker://{server.host}/hub/library/multi:1.0", tmp_path / "multi", all_images=True)

    rows = wait_for_zero_lag(server)
    assert {row["projection"] for row in rows} >= {"audit", "tags", "manifests", "blobs", "counters", "orgs"}
    deadline = time.monotonic() + 5
    while manifest_gets() - before_gets < 5 and time.monotonic() < deadline:   # access lines follow responses
        time.sleep(0.1)
    new_gets = manifest_gets() - before_gets
    assert new_gets == 5, "expected 1 + 1 + (index + 2 platform manifests) manifest GETs"
    assert audited() - before_audited == new_gets, "a manifest GET was not recorded as a Pull"
