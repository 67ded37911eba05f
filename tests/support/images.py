"""Real, deterministic OCI/Docker test images built in pure Python, and a push over the distribution API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

DEFAULT_PLATFORMS = (("linux", "amd64", None), ("linux", "arm64", "v8"))


class Blob(NamedTuple):
    """A content-addressed blob; unpacks as (digest, bytes)."""

    digest: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Image:
    manifest_bytes: bytes
    manifest_digest: str
    media_type: str
    config: Blob
    layers: list[Blob]
    diff_ids: list[str]
    platform: dict

    @property
    def digest(self) -> str:
        return self.manifest_digest

    @property
    def blobs(self) -> dict[str, bytes]:
        return {blob.digest: blob.data for blob in [self.config, *self.layers]}


@dataclass(frozen=True)
class Index:
    bytes: bytes
    digest: str
    media_type: str
    children: list[Image] = field(default_factory=list)

    @property
    def manifest_bytes(self) -> bytes:
        return self.bytes

    @property
    def manifest_digest(self) -> str:
        return self.digest

    @property
    def blobs(self) -> dict[str, bytes]:
        return {digest: data for child in self.children for digest, data in child.blobs.items()}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(document: dict) -> bytes:
    return json.dumps(document, indent=3).encode()


def _tar(files: dict[str, bytes]) -> bytes:
    # Fixed owners, modes and mtimes make the archive a pure function of its contents.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        directories = sorted({name.rsplit("/", 1)[0] for name in files if "/" in name})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _layer(rng: random.Random, label: str, size: int) -> tuple[Blob, str]:
    """A gzip'd tar of two small files; returns the blob and its diff_id (digest of the plain tar)."""
    half = size // 2
    tar = _tar({
        f"entrepot/{label}/a.bin": rng.randbytes(half),
        f"entrepot/{label}/b.bin": rng.randbytes(size - half),
        f"entrepot/{label}/README": f"layer {label}\n".encode(),
    })
    compressed = gzip.compress(tar, compresslevel=6, mtime=0)
    return Blob(sha256(compressed), compressed), sha256(tar)


def build_image(
    seed: int | str,
    layers: int = 2,
    layer_size: int = 4096,
    oci: bool = False,
    os: str = "linux",
    architecture: str = "amd64",
    variant: str | None = None,
    revision: int = 0,
) -> Image:
    """A valid single-platform image; the same arguments always give the same digests.

    `revision` changes only the top layer, as a rebuilt image pushed over the same tag would.
    """
    blobs, diff_ids = [], []
    for number in range(layers):
        top = number == layers - 1
        rng = random.Random(f"{seed}/{os}/{architecture}/{number}" + (f"/r{revision}" if top else ""))
        blob, diff_id = _layer(rng, f"layer{number}", layer_size)
        blobs.append(blob)
        diff_ids.append(diff_id)

    platform = {"architecture": architecture, "os": os} | ({"variant": variant} if variant else {})
    config_bytes = _json({
        **platform,
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"seed": str(seed)}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"entrepot test layer {n}"} for n in range(layers)],
    })
    config = Blob(sha256(config_bytes), config_bytes)

    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": layer_type, "size": blob.size, "digest": blob.digest} for blob in blobs],
    })
    return Image(manifest, sha256(manifest), media_type, config, blobs, diff_ids, platform)


def build_index(
    seed: int | str,
    layers: int = 2,
    layer_size: int = 4096,
    oci: bool = False,
    platforms: tuple[tuple[str, str, str | None], ...] = DEFAULT_PLATFORMS,
    revision: int = 0,
) -> Index:
    """A multi-arch image: an OCI index (oci=True) or a Docker manifest list of one image per platform."""
    children = [
        build_image(seed, layers, layer_size, oci, os_name, arch, variant, revision)
        for os_name, arch, variant in platforms
    ]
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {"mediaType": child.media_type, "size": len(child.manifest_bytes), "digest": child.manifest_digest,
             "platform": child.platform}
            for child in children
        ],
    }
    data = _json(document)
    return Index(data, sha256(data), media_type, children)


def _auth(auth) -> httpx.Auth | None:
    if auth is None or isinstance(auth, httpx.Auth):
        return auth
    return httpx.BasicAuth(*auth)


def push_blob(client: httpx.Client, base_url: str, repository: str, digest: str, data: bytes) -> None:
    if client.head(f"{base_url}/v2/{repository}/blobs/{digest}").status_code == 200:
        return
    started = client.post(f"{base_url}/v2/{repository}/blobs/uploads/")
    if started.status_code != 202:
        raise RuntimeError(f"blob upload not started: {started.status_code} {started.text}")
    location = httpx.URL(base_url).join(started.headers["Location"])
    done = client.put(location.copy_merge_params({"digest": digest}), content=data,
                      headers={"Content-Type": "application/octet-stream"})
    if done.status_code != 201:
        raise RuntimeError(f"blob {digest} not pushed: {done.status_code} {done.text}")


def put_manifest(base_url: str, repository: str, reference: str, manifest_bytes: bytes, media_type: str,
                 auth=None, client: httpx.Client | None = None) -> None:
    """PUT one manifest (by tag or digest); its blobs and children must already be in the registry."""
    with httpx.Client(auth=_auth(auth), timeout=30) if client is None else nullcontext(client) as http:
        answer = http.put(f"{base_url}/v2/{repository}/manifests/{reference}", content=manifest_bytes,
                          headers={"Content-Type": media_type})
        if answer.status_code != 201:
            raise RuntimeError(f"manifest {reference} not pushed: {answer.status_code} {answer.text}")


def push_image(base_url: str, repository: str, tag: str | None, image: Image | Index, auth=None) -> str:
    """Push an image or index (blobs, then child manifests by digest, then the top by tag); returns its digest.

    `auth` is (username, password) or an httpx.Auth. With `tag=None` the top manifest is pushed by digest only.
    """
    base_url = base_url.rstrip("/")
    children = image.children if isinstance(image, Index) else []
    with httpx.Client(auth=_auth(auth), timeout=30) as client:
        for digest, data in image.blobs.items():
            push_blob(client, base_url, repository, digest, data)
        for child in children:
            put_manifest(base_url, repository, child.manifest_digest, child.manifest_bytes, child.media_type,
                         client=client)
        put_manifest(base_url, repository, tag or image.manifest_digest, image.manifest_bytes, image.media_type,
                     client=client)
    return image.manifest_digest


EMPTY_CONFIG = Blob(sha256(b"{}"), b"{}")   # application/vnd.oci.empty.v1+json: the config of an artifact


def build_artifact(subject: Image | Index, artifact_type: str, payload: bytes, annotations: dict | None = None,
                   payload_type: str = "application/octet-stream") -> Image:
    """An OCI 1.1 artifact (a signature, SBOM or attestation) that refers to `subject`: an image manifest
    with `artifactType`, the empty config, one payload layer and a `subject` descriptor."""
    payload_blob = Blob(sha256(payload), payload)
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_CONFIG.digest, "size": 2}
    document = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type, "config": empty,
                "layers": [{"mediaType": payload_type, "digest": payload_blob.digest, "size": payload_blob.size}],
                "subject": {"mediaType": subject.media_type, "digest": subject.manifest_digest,
                            "size": len(subject.manifest_bytes)}}
    if annotations:
        document["annotations"] = annotations
    manifest = _json(document)
    return Image(manifest, sha256(manifest), "application/vnd.oci.image.manifest.v1+json", EMPTY_CONFIG,
                 [payload_blob], [], {})


def referrers_index_of(*artifacts: Image) -> Index:
    """The index a client without the referrers API keeps under the fallback tag `sha256-<hex>`."""
    manifests = []
    for artifact in artifacts:
        document = json.loads(artifact.manifest_bytes)
        entry = {"mediaType": artifact.media_type, "digest": artifact.manifest_digest,
                 "size": len(artifact.manifest_bytes), "artifactType": document["artifactType"]}
        if document.get("annotations"):
            entry["annotations"] = document["annotations"]
        manifests.append(entry)
    body = _json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
    return Index(body, sha256(body), "application/vnd.oci.image.index.v1+json")
