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
OCI_EMPTY = "application/vnd.oci.empty.v1+json"  # the config of an artifact that needs none: `{}`
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


class InvalidManifest(ValueError):
    """Bytes that are not a manifest we can cache."""


@dataclass(frozen=True)
class ManifestContent:
    media_type: str
    blobs: list[str] = field(default_factory=list)     # config and layers
    children: list[str] = field(default_factory=list)  # platform manifests of an index
    # OCI 1.1: the manifest this one refers to (a signature, SBOM or attestation of an image), and
    # what its descriptor in a referrers list says about it. Empty for an ordinary image.
    subject: str = ""
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
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
        return ManifestContent(media_type, children=_digests(children), sizes=_sizes(children),
                               **_referrer(document, config_type=""))
    config = document.get("config")
    layers = document.get("layers", [])
    blobs = _digests([config] if isinstance(config, dict) else []) + _digests(layers)   # a non-list is refused
    descriptors = ([config] if isinstance(config, dict) else []) + layers
    config_type = config.get("mediaType", "") if isinstance(config, dict) else ""
    return ManifestContent(media_type, blobs=blobs, sizes=_sizes(descriptors),
                           **_referrer(document, config_type=config_type))


def _sizes(descriptors: list) -> dict[str, int]:
    """Declared sizes (a quota counts an image whole before its layers arrive); odd ones are left out."""
    return {str(descriptor["digest"]): descriptor["size"] for descriptor in descriptors
            if isinstance(descriptor.get("size"), int) and not isinstance(descriptor["size"], bool)
            and 0 <= descriptor["size"] < 2**62}


def _referrer(document: dict, config_type: str) -> dict:
    """subject, artifact_type and annotations of a manifest that refers to another (OCI 1.1).

    The artifact type is what a referrers list shows (distribution-spec, "Listing Referrers"): the
    manifest's `artifactType`, else its config's media type; an index without one has none.
    """
    subject = document.get("subject")
    if subject is None:
        return {}
    if not isinstance(subject, dict):
        raise InvalidManifest("subject must be a descriptor")
    [digest] = _digests([subject])
    artifact_type = document.get("artifactType") or config_type
    annotations = document.get("annotations") or {}
    if not isinstance(artifact_type, str) or not isinstance(annotations, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise InvalidManifest("artifactType must be a string and annotations a map of strings")
    return {"subject": digest, "artifact_type": artifact_type, "annotations": dict(annotations)}


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
