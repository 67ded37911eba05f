"""What a manifest or index references, read from its JSON (pure; no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from domain.names import Digest, InvalidDigest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec lets registries refuse larger manifests

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


class InvalidManifest(ValueError):
    """Bytes that are not a manifest we can cache."""


@dataclass(frozen=True)
class ManifestContent:
    media_type: str
    blobs: list[str] = field(default_factory=list)     # config and layers
    children: list[str] = field(default_factory=list)  # platform manifests of an index
    sizes: dict[str, int] = field(default_factory=dict)  # digest -> size its descriptor declares


def read_manifest(content: bytes, declared_media_type: str = "") -> ManifestContent:
    """The media type (declared in the body, else by the server) and the digests it references."""
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise InvalidManifest("manifest is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidManifest("manifest is not a JSON object")
    media_type = document.get("mediaType") or declared_media_type or _guess(document)
    if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
        children = document.get("manifests", [])
        return ManifestContent(media_type, children=_digests(children), sizes=_sizes(children))
    descriptors = [document["config"]] if isinstance(document.get("config"), dict) else []
    descriptors += document.get("layers", []) if isinstance(document.get("layers"), list) else []
    blobs = _digests(descriptors)
    return ManifestContent(media_type, blobs=blobs, sizes=_sizes(descriptors))


def _sizes(descriptors: list) -> dict[str, int]:
    """Declared sizes (a quota counts an image whole before its layers arrive); odd ones are left out."""
    return {str(descriptor["digest"]): descriptor["size"] for descriptor in descriptors
            if isinstance(descriptor.get("size"), int) and not isinstance(descriptor["size"], bool)
            and 0 <= descriptor["size"] < 2**62}


def _guess(document: dict) -> str:
    if "manifests" in document:
        return OCI_INDEX
    if document.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+prettyjws"
    return OCI_MANIFEST


def _digests(descriptors) -> list[str]:
    if not isinstance(descriptors, list):
        raise InvalidManifest("descriptors must be a list")
    out = []
    for descriptor in descriptors:
        try:
            out.append(str(Digest.parse(descriptor["digest"])))
        except (TypeError, KeyError, InvalidDigest):
            raise InvalidManifest("descriptor without a valid digest") from None
    return out
