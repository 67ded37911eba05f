"""Images from tests/support/images.py, pushed to a real registry, are valid for real clients (skopeo, umoci)."""

import subprocess

import pytest

from tests.support.components import require
from tests.support.images import build_image, build_index, push_image

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def skopeo_installed() -> None:
    require("skopeo")  # skips locally, fails in CI


def skopeo_copy(source: str, destination: str, *options: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", *options, source, destination],
                   check=True, capture_output=True, timeout=60)


def test_skopeo_copies_a_pushed_image_unchanged(upstream_registry, tmp_path):
    image = build_image(21)
    push_image(upstream_registry.url, "team/app", "v1", image)

    skopeo_copy(f"docker://{upstream_registry.host}/team/app:v1", f"dir:{tmp_path / 'app'}")

    assert (tmp_path / "app" / "manifest.json").read_bytes() == image.manifest_bytes
    for digest, data in image.blobs.items():
        assert (tmp_path / "app" / digest.removeprefix("sha256:")).read_bytes() == data


def test_an_oci_image_unpacks_into_its_files(upstream_registry, tmp_path):
    require("umoci")
    push_image(upstream_registry.url, "team/app", "v1", build_image(22, layers=2, oci=True))

    skopeo_copy(f"docker://{upstream_registry.host}/team/app:v1", f"oci:{tmp_path / 'layout'}:v1")
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:v1", str(tmp_path / "bundle")],
                   check=True, capture_output=True, timeout=60)

    rootfs = tmp_path / "bundle" / "rootfs" / "entrepot"
    assert sorted(path.name for path in rootfs.iterdir()) == ["layer0", "layer1"]
    assert (rootfs / "layer1" / "README").read_text() == "layer layer1\n"


def test_skopeo_copies_every_platform_of_a_multi_arch_index(upstream_registry, tmp_path):
    index = build_index(23)
    push_image(upstream_registry.url, "team/multi", "v1", index)

    skopeo_copy(f"docker://{upstream_registry.host}/team/multi:v1", f"dir:{tmp_path / 'multi'}", "--all")

    copied = tmp_path / "multi"
    assert (copied / "manifest.json").read_bytes() == index.bytes
    for child in index.children:
        assert (copied / f"{child.manifest_digest.removeprefix('sha256:')}.manifest.json").read_bytes() == \
            child.manifest_bytes
    assert {digest.removeprefix("sha256:") for digest in index.blobs} <= {path.name for path in copied.iterdir()}
