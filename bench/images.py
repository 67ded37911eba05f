"""Benchmark images: uncompressed tar layers streamed to a file and pushed from it, never whole in memory."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"  # uncompressed: digest == diff_id
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT_ALL = ", ".join((DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX))

CHUNK = 1024 * 1024
_POOL_SIZE = 8 * CHUNK
_pool: bytes | None = None


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class BenchImage:
    """What a client pulls: `tag` resolves to `manifest_digest` (maybe through an index) and its blobs."""

    repository: str
    tag: str
    top_digest: str           # what the tag points at (an index for multi-arch images)
    manifest_digest: str      # the platform manifest a client ends up with
    blobs: tuple[Blob, ...]   # config first, then layers
    pull_bytes: int           # every byte a client downloads: top manifest, platform manifest, blobs

    @property
    def largest_layer(self) -> Blob:
        return max(self.blobs[1:], key=lambda blob: blob.size)


def _random_chunk(index: int, size: int) -> bytes:
    # os.urandom and random.randbytes manage 100-200 MB/s here; a random pool, shifted and prefixed
    # by fresh random bytes per chunk, is just as incompressible and unique, at hashing speed.
    global _pool
    if _pool is None:
        _pool = os.urandom(_POOL_SIZE)
    head = os.urandom(min(32, size))
    start = (index * 40_961) % (_POOL_SIZE - CHUNK)
    return head + _pool[start:start + size - len(head)]


def write_layer(path: Path, size: int, label: str) -> Blob:
    """An uncompressed tar holding one `size`-byte file of random bytes, written in 1 MiB chunks."""
    info = tarfile.TarInfo(f"bench/{label}.bin")
    info.size, info.mode, info.mtime = size, 0o644, 0
    hasher, total = hashlib.sha256(), 0
    with open(path, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal total
            hasher.update(data)
            out.write(data)
            total += len(data)
        emit(info.tobuf(format=tarfile.USTAR_FORMAT))
        for index, offset in enumerate(range(0, size, CHUNK)):
            emit(_random_chunk(index, min(CHUNK, size - offset)))
        emit(b"\0" * ((-size) % 512) + b"\0" * 1024)  # pad the file, then the end-of-archive marker
    return Blob("sha256:" + hasher.hexdigest(), total)


def _file_chunks(path: Path):
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            yield chunk


class Pusher:
    """Pushes to one registry with the plain distribution API (POST, PATCH streamed, PUT)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=httpx.Timeout(30, read=600))

    def close(self) -> None:
        self.http.close()

    def _upload(self, repository: str, digest: str, body) -> None:
        started = self.http.post(f"{self.base_url}/v2/{repository}/blobs/uploads/")
        started.raise_for_status()
        location = httpx.URL(self.base_url).join(started.headers["Location"])
        if body is not None:  # chunked PATCH from a generator: the file is never read whole
            patched = self.http.patch(location, content=body, headers={"Content-Type": "application/octet-stream"})
            patched.raise_for_status()
            location = httpx.URL(self.base_url).join(patched.headers["Location"])
            body = b""
        done = self.http.put(location.copy_merge_params({"digest": digest}), content=body)
        if done.status_code != 201:
            raise RuntimeError(f"blob {digest} not pushed: {done.status_code} {done.text[:300]}")

    def blob_file(self, repository: str, blob: Blob, path: Path) -> None:
        self._upload(repository, blob.digest, _file_chunks(path))

    def blob_bytes(self, repository: str, data: bytes) -> Blob:
        blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        started = self.http.post(f"{self.base_url}/v2/{repository}/blobs/uploads/")
        started.raise_for_status()
        location = httpx.URL(self.base_url).join(started.headers["Location"])
        done = self.http.put(location.copy_merge_params({"digest": blob.digest}), content=data,
                             headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise RuntimeError(f"blob {blob.digest} not pushed: {done.status_code} {done.text[:300]}")
        return blob

    def manifest(self, repository: str, reference: str, document: dict) -> tuple[str, bytes]:
        data = json.dumps(document, indent=3).encode()
        answer = self.http.put(f"{self.base_url}/v2/{repository}/manifests/{reference}", content=data,
                               headers={"Content-Type": document["mediaType"]})
        if answer.status_code != 201:
            raise RuntimeError(f"manifest {repository}:{reference} not pushed: {answer.status_code} {answer.text}")
        return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _platform_manifest(pusher: Pusher, repository: str, layers: list[Blob], platform: dict) -> tuple[Blob, str, bytes]:
    config = pusher.blob_bytes(repository, json.dumps({
        **platform, "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"entrepot.bench": repository}},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }).encode())
    document = {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": LAYER_TAR, "size": layer.size, "digest": layer.digest} for layer in layers],
    }
    data = json.dumps(document, indent=3).encode()
    digest, data = pusher.manifest(repository, "sha256:" + hashlib.sha256(data).hexdigest(), document)
    return config, digest, data


def push_image(pusher: Pusher, workdir: Path, repository: str, tag: str, layer_sizes: list[int],
               multi_arch: bool = False) -> BenchImage:
    """Generate and push an image with one layer per size (each file deleted once pushed).

    multi_arch: the tag points at a manifest list of linux/amd64 (these layers) and linux/arm64
    (one small layer), as most Docker Hub images are; clients pull the amd64 one.
    """
    layers = [_push_layer(pusher, workdir, repository, size, f"l{number}")
              for number, size in enumerate(layer_sizes)]
    amd64 = {"architecture": "amd64", "os": "linux"}
    config, digest, data = _platform_manifest(pusher, repository, layers, amd64)
    pull_bytes = len(data) + config.size + sum(layer.size for layer in layers)
    if not multi_arch:
        pusher.manifest(repository, tag, json.loads(data))
        return BenchImage(repository, tag, digest, digest, (config, *layers), pull_bytes)
    arm64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    small = _push_layer(pusher, workdir, repository, 4096, "arm64")
    _, arm_digest, arm_data = _platform_manifest(pusher, repository, [small], arm64)
    index_digest, index_data = pusher.manifest(repository, tag, {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": len(data), "digest": digest, "platform": amd64},
            {"mediaType": DOCKER_MANIFEST, "size": len(arm_data), "digest": arm_digest, "platform": arm64},
        ],
    })
    return BenchImage(repository, tag, index_digest, digest, (config, *layers), pull_bytes + len(index_data))


def _push_layer(pusher: Pusher, workdir: Path, repository: str, size: int, label: str) -> Blob:
    path = workdir / f"layer-{os.getpid()}-{label}.tar"
    try:
        blob = write_layer(path, size, label)
        pusher.blob_file(repository, blob, path)
        return blob
    finally:
        path.unlink(missing_ok=True)
