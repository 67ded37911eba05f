"""The test image builder gives deterministic, self-consistent images."""

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    build_image,
    build_index,
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_same_seed_gives_the_same_digests():
    first, second = build_image(7), build_image(7)
    assert first.manifest_bytes == second.manifest_bytes
    assert first.blobs == second.blobs
    assert build_index(7, oci=True).digest == build_index(7, oci=True).digest


def test_another_seed_gives_other_digests():
    assert build_image(7).manifest_digest != build_image(8).manifest_digest
    assert not set(build_image(7).blobs) & set(build_image(8).blobs)


def test_a_new_revision_changes_only_the_top_layer():
    old, new = build_image(7, layers=3), build_image(7, layers=3, revision=1)
    assert old.layers[:2] == new.layers[:2]
    assert old.layers[2] != new.layers[2]
    assert old.manifest_digest != new.manifest_digest


@pytest.mark.parametrize("oci, media_type", [(False, DOCKER_MANIFEST), (True, OCI_MANIFEST)])
def test_the_manifest_references_its_config_and_layers(oci, media_type):
    image = build_image(3, layers=2, layer_size=1000, oci=oci)
    manifest = json.loads(image.manifest_bytes)
    assert image.media_type == manifest["mediaType"] == media_type
    assert image.manifest_digest == sha256(image.manifest_bytes)
    assert manifest["config"] == {**manifest["config"], "digest": image.config.digest, "size": len(image.config.data)}
    assert [(layer["digest"], layer["size"]) for layer in manifest["layers"]] == [
        (digest, len(data)) for digest, data in image.layers
    ]
    for digest, data in image.blobs.items():
        assert sha256(data) == digest


def test_layers_are_gzipped_tars_whose_digests_are_the_configs_diff_ids():
    image = build_image(3, layers=2, layer_size=1000)
    config = json.loads(image.config.data)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    diff_ids = []
    for _, data in image.layers:
        tar_bytes = gzip.decompress(data)
        diff_ids.append(sha256(tar_bytes))
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            files = [member for member in tar.getmembers() if member.isfile()]
            assert len(files) >= 2
            assert sum(member.size for member in files if member.name.endswith(".bin")) == 1000
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}


@pytest.mark.parametrize("oci, media_type", [(False, DOCKER_MANIFEST_LIST), (True, OCI_INDEX)])
def test_the_index_lists_one_image_per_platform(oci, media_type):
    index = build_index(5, oci=oci)
    document = json.loads(index.bytes)
    assert index.media_type == document["mediaType"] == media_type
    assert index.digest == sha256(index.bytes)
    assert [(entry["digest"], entry["size"], entry["platform"]["architecture"]) for entry in document["manifests"]] == [
        (child.manifest_digest, len(child.manifest_bytes), arch) for child, arch in zip(index.children, ("amd64", "arm64"))
    ]
    assert len(set(index.blobs)) == 6        # a config and two layers for each platform
