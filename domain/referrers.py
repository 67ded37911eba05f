"""OCI 1.1 referrers, pure: what a manifest with a subject says of itself, the referrers list (an
image index of descriptors), its fallback tag, filtering and paging."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from domain.manifest import OCI_INDEX, InvalidManifest, ManifestContent
from domain.names import Digest, InvalidDigest


@dataclass(frozen=True)
class Referrer:
    """A manifest's own `subject` and what its descriptor in a referrers list carries."""

    subject: str = ""
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


def referrer_of(content: ManifestContent) -> Referrer | None:
    """What the manifest refers to; None for an ordinary manifest (no subject)."""
    if not content.subject:
        return None
    return Referrer(content.subject, content.artifact_type, dict(content.annotations))


@dataclass(frozen=True)
class Descriptor:
    """One entry of a referrers list: a manifest whose subject is the digest asked about."""

    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:   # an index without an artifactType has none (spec, "Listing Referrers")
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: `<algorithm>-<encoded>`, truncated to 32 and 64 characters, with
    every character a tag may not hold replaced by `-` (sha256:abc… → sha256-abc…)."""
    algorithm, _, encoded = digest.partition(":")
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{algorithm[:32]}-{encoded[:64]}")


def referrers_index(descriptors: Iterable[Descriptor]) -> bytes:
    """The answer's body: an OCI image index (compact JSON, so its digest is stable)."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": [d.as_json() for d in descriptors]}, separators=(",", ":")).encode()


def read_referrers_index(content: bytes) -> list[Descriptor]:
    """The descriptors of an index an upstream answered (its referrers API, or its fallback tag)."""
    try:
        document = json.loads(content)
        entries = document["manifests"] if isinstance(document, dict) else None
    except (ValueError, UnicodeDecodeError, KeyError):
        raise InvalidManifest("a referrers list must be an image index") from None
    if not isinstance(entries, list):
        raise InvalidManifest("a referrers list must be an image index with a list of manifests")
    return [descriptor_of(entry) for entry in entries]


def descriptor_of(entry) -> Descriptor:
    """One entry of an index's `manifests`, checked: InvalidManifest when a field is missing or malformed."""
    try:
        digest = str(Digest.parse(entry["digest"]))
        media_type, size = entry["mediaType"], entry["size"]
        artifact_type = entry.get("artifactType", "")
        annotations = entry.get("annotations") or {}
    except (TypeError, KeyError, AttributeError, InvalidDigest):
        raise InvalidManifest("a referrers list entry without a valid digest, mediaType and size") from None
    if not isinstance(media_type, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0 \
            or not isinstance(artifact_type, str) or not isinstance(annotations, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise InvalidManifest("a referrers list entry with a malformed field")
    return Descriptor(media_type, digest, size, artifact_type, dict(annotations))


def merged(*lists: Iterable[Descriptor]) -> list[Descriptor]:
    """The lists in order, each manifest once (the first source that names a digest wins)."""
    seen: dict[str, Descriptor] = {}
    for descriptors in lists:
        for descriptor in descriptors:
            seen.setdefault(descriptor.digest, descriptor)
    return list(seen.values())


def of_artifact_type(descriptors: Iterable[Descriptor], artifact_type: str) -> list[Descriptor]:
    return [d for d in descriptors if d.artifact_type == artifact_type]


def page(descriptors: list[Descriptor], n: int, last: str | None) -> tuple[list[Descriptor], bool]:
    """Up to n descriptors after the one whose digest is `last` (in list order), and whether more follow."""
    start = 0
    if last:
        digests = [d.digest for d in descriptors]
        start = digests.index(last) + 1 if last in digests else len(descriptors)
    chunk = descriptors[start:start + n]
    return chunk, start + n < len(descriptors)
