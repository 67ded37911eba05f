"""Aggregates of what the cache holds: tag resolutions, cached manifests and cached blobs.

Bytes are not events: events carry digests, sizes and media types; the bytes live in blob storage.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class TagResolution(Aggregate):
    """What digest a tag of an upstream repository pointed to, and when upstream last confirmed it."""

    class Resolved(Aggregate.Created):
        org: str
        repository: str
        tag: str
        digest: str
        media_type: str
        checked_at: float

    class Revalidated(Aggregate.Event):
        org: str
        repository: str
        tag: str
        digest: str
        checked_at: float

    class Retargeted(Aggregate.Event):
        org: str
        repository: str
        tag: str
        old_digest: str
        digest: str
        media_type: str
        checked_at: float

    class Dropped(Aggregate.Event):
        """The image the tag pointed to left the cache (eviction or flush); the next pull resolves it afresh."""
        org: str
        repository: str
        tag: str
        digest: str
        reason: str
        at: float

    @staticmethod
    def create_id(org: str, repository: str, tag: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:tag:{org}/{repository}:{tag}")

    @event(Resolved)
    def __init__(self, org: str, repository: str, tag: str, digest: str, media_type: str, checked_at: float) -> None:
        self.org, self.repository, self.tag = org, repository, tag
        self.digest, self.media_type, self.checked_at = digest, media_type, checked_at

    def observe(self, digest: str, media_type: str, checked_at: float) -> None:
        """Upstream answered for this tag: the same digest revalidates it, another retargets it.

        A dropped tag has no digest, so whatever upstream says next retargets it (old_digest "").
        """
        if digest == self.digest:
            self._revalidated(org=self.org, repository=self.repository, tag=self.tag, digest=digest,
                              checked_at=checked_at)
        else:
            self._retargeted(org=self.org, repository=self.repository, tag=self.tag, old_digest=self.digest,
                             digest=digest, media_type=media_type, checked_at=checked_at)

    @event(Revalidated)
    def _revalidated(self, org, repository, tag, digest, checked_at) -> None:
        self.checked_at = checked_at

    @event(Retargeted)
    def _retargeted(self, org, repository, tag, old_digest, digest, media_type, checked_at) -> None:
        self.digest, self.media_type, self.checked_at = digest, media_type, checked_at

    @property
    def dropped(self) -> bool:
        return self.digest == ""

    def drop(self, reason: str, at: float) -> None:
        if not self.dropped:
            self._dropped(org=self.org, repository=self.repository, tag=self.tag, digest=self.digest,
                          reason=reason, at=at)

    @event(Dropped)
    def _dropped(self, org, repository, tag, digest, reason, at) -> None:
        self.digest = ""


class CachedManifest(Aggregate):
    """A manifest (or index) stored by digest for one repository of an org."""

    class Cached(Aggregate.Created):
        # Version 2 was made twice on parallel branches (one added subject, artifact_type and annotations for
        # OCI 1.1 referrers, the other sizes for quotas); version 3 has all four. Both upcasts only fill in
        # what is missing, so an event of either version 2 reads right.
        class_version = 3

        org: str
        repository: str
        digest: str
        media_type: str
        size: int
        blobs: list        # config and layer digests of an image manifest
        children: list     # platform manifest digests of an index
        cached_at: float
        subject: str       # the digest of the manifest this one refers to; "" for an ordinary manifest
        artifact_type: str   # what the referrers list shows (artifactType, else the config's media type)
        annotations: dict    # the manifest's annotations, kept only when it has a subject
        sizes: dict        # digest -> size the descriptors declare (blobs and children)

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            _fill_v3(state)

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            _fill_v3(state)

    @staticmethod
    def create_id(org: str, repository: str, digest: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:manifest:{org}/{repository}@{digest}")

    class Evicted(Aggregate.Event):
        """The manifest left the cache with its image: the issue's ImageEvicted when `image == digest`.

        A child of an index records it too (`image` = the index), so that a later pull caches it again.
        """
        org: str
        repository: str
        digest: str
        image: str          # the evicted image's manifest digest
        tags: list          # the tags that pointed at the image
        bytes: int          # what the org's usage lost with the image (shared blobs not counted)
        reason: str         # quota | capacity | flush | oversize
        policy: str         # lru | lfu ("" for a flush)
        actor: str          # system:evictor, or the admin identity of a flush
        at: float

    class Recached(Aggregate.Event):
        """Pulled again after an eviction: the same facts as Cached (version 2 adds the referrer's
        subject, artifact_type and annotations, so the referrers view lists it again)."""
        class_version = 2

        org: str
        repository: str
        digest: str
        media_type: str
        size: int
        blobs: list
        children: list
        cached_at: float
        sizes: dict
        subject: str
        artifact_type: str
        annotations: dict

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            # Before version 2 the view restores a referrer from its own row (kept, marked not held).
            state.setdefault("subject", "")
            state.setdefault("artifact_type", "")
            state.setdefault("annotations", {})

    @event(Cached)
    def __init__(self, org: str, repository: str, digest: str, media_type: str, size: int,
                 blobs: list, children: list, cached_at: float, subject: str = "", artifact_type: str = "",
                 annotations: dict | None = None, sizes: dict | None = None) -> None:
        self.org, self.repository, self.digest = org, repository, digest
        self.media_type, self.size = media_type, size
        self.blobs, self.children, self.cached_at = list(blobs), list(children), cached_at
        self.subject, self.artifact_type, self.annotations = subject, artifact_type, dict(annotations or {})
        self.held = True

    def evict(self, image: str, tags: list, bytes: int, reason: str, policy: str, actor: str, at: float) -> None:
        if self.held:
            self._evicted(org=self.org, repository=self.repository, digest=self.digest, image=image, tags=list(tags),
                          bytes=bytes, reason=reason, policy=policy, actor=actor, at=at)

    @event(Evicted)
    def _evicted(self, org, repository, digest, image, tags, bytes, reason, policy, actor, at) -> None:
        self.held = False

    def recache(self, media_type: str, size: int, blobs: list, children: list, cached_at: float,
                sizes: dict | None = None) -> None:
        if not self.held:
            # The same digest, so the same subject: what Cached recorded (a manifest is content-addressed).
            self._recached(org=self.org, repository=self.repository, digest=self.digest, media_type=media_type,
                           size=size, blobs=list(blobs), children=list(children), cached_at=cached_at,
                           sizes=dict(sizes or {}), subject=self.subject, artifact_type=self.artifact_type,
                           annotations=dict(self.annotations))

    @event(Recached)
    def _recached(self, org, repository, digest, media_type, size, blobs, children, cached_at, sizes,
                  subject, artifact_type, annotations) -> None:
        self.held, self.cached_at = True, cached_at


def _fill_v3(state: dict) -> None:
    state.setdefault("subject", "")
    state.setdefault("artifact_type", "")
    state.setdefault("annotations", {})
    state.setdefault("sizes", {})


class CachedBlob(Aggregate):
    """A verified blob that an org's pulls brought into storage.

    One per generation of the org (domain.org.CacheOrg.Recreated): a new org of a deleted one's name
    holds nothing the old one brought in, so its upstream is asked before such a blob is served to it.
    """

    class Cached(Aggregate.Created):
        class_version = 2   # 2 added the generation

        org: str
        repository: str
        digest: str
        size: int
        cached_at: float
        generation: int

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state.setdefault("generation", 1)

    @staticmethod
    def create_id(org: str, digest: str, generation: int = 1) -> UUID:
        # The first generation keeps the ids recorded before generations existed.
        holder = org if generation == 1 else f"{org}#{generation}"
        return uuid5(NAMESPACE_URL, f"entrepot:blob:{holder}@{digest}")

    @event(Cached)
    def __init__(self, org: str, repository: str, digest: str, size: int, cached_at: float,
                 generation: int = 1) -> None:
        self.org, self.repository, self.digest, self.size, self.cached_at = org, repository, digest, size, cached_at
        self.generation = generation


class CorruptBlob(Aggregate):
    """Upstream sent bytes that did not match their digest: nothing was stored, this records that it happened."""

    class Detected(Aggregate.Created):
        org: str
        repository: str
        digest: str
        detail: str
        detected_at: float

    @event(Detected)
    def __init__(self, org: str, repository: str, digest: str, detail: str, detected_at: float) -> None:
        self.org, self.repository, self.digest, self.detail, self.detected_at = org, repository, digest, detail, detected_at
