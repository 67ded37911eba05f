"""The CacheRecords application: organizations and what the cache holds (tags, manifests, blobs)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.cache import CachedBlob, CachedManifest, CorruptBlob, TagResolution
from domain.referrers import Referrer
from domain.referrers_list import ReferrersList
from domain.org import CacheOrg, normalize_settings, validate_org_name
from application.retention_records import RetentionCommands


class CacheRecords(RetentionCommands, Application[UUID]):
    name = "Registry"  # pinned: table and env prefix must not follow a class rename

    # -- organizations ---------------------------------------------------------------------------
    def apply_org(self, name: str, settings: dict) -> bool:
        """Create or update an org (idempotent). Returns True when an event was recorded."""
        validate_org_name(name)
        settings = normalize_settings(settings)
        recorded: list = []

        def changes() -> list:
            # Replicas starting together apply the same file: the loser of the race reloads and
            # finds the org already as configured, so it records nothing.
            try:
                org = self.repository.get(CacheOrg.create_id(name))
                org.reconfigure(settings)
            except AggregateNotFoundError:
                org = CacheOrg(name=name, settings=settings)
            recorded[:] = [org] if org.pending_events else []
            return recorded
        self._save_with_retry(changes)
        return bool(recorded)

    def delete_org(self, name: str) -> bool:
        org = self.get_org(name)
        if org is None:
            return False
        org.delete()
        return bool(self.save(org))

    def get_org(self, name: str) -> CacheOrg | None:
        try:
            org = self.repository.get(CacheOrg.create_id(name))
        except AggregateNotFoundError:
            return None
        return None if org.deleted else org

    # -- what the cache holds --------------------------------------------------------------------
    def record_tag(self, org: str, repository: str, tag: str, digest: str, media_type: str, checked_at: float) -> None:
        """Upstream told us what a tag points to: resolve, revalidate or retarget it."""
        self._save_with_retry(lambda: [self._observed_tag(org, repository, tag, digest, media_type, checked_at)])

    def record_manifest(self, org: str, repository: str, digest: str, media_type: str, size: int,
                        blobs: list[str], children: list[str], cached_at: float, tag: str | None = None,
                        referrer: Referrer | None = None, sizes: dict[str, int] | None = None) -> None:
        """A fetched manifest, and the tag it was fetched by, in one transaction."""
        referrer = referrer or Referrer()
        def changes() -> list:
            out = []
            try:   # evicted before: pulled again, so cached again
                manifest = self.repository.get(CachedManifest.create_id(org, repository, digest))
                manifest.recache(media_type, size, blobs, children, cached_at, sizes)
                if manifest.pending_events:
                    out.append(manifest)
            except AggregateNotFoundError:
                out.append(CachedManifest(org=org, repository=repository, digest=digest, media_type=media_type,
                                          size=size, blobs=blobs, children=children, cached_at=cached_at,
                                          subject=referrer.subject, artifact_type=referrer.artifact_type,
                                          annotations=dict(referrer.annotations), sizes=dict(sizes or {})))
            if tag is not None:
                out.append(self._observed_tag(org, repository, tag, digest, media_type, cached_at))
            return out
        self._save_with_retry(changes)

    def record_referrers(self, org: str, repository: str, subject: str, descriptors: list[dict], checked_at: float,
                         shown: bool) -> None:
        """Upstream listed the referrers of `subject`: recorded when the list changed (or the views lost
        it), confirmed when it did not; `descriptors` as an index lists them."""
        def changes() -> list:
            try:
                listing = self.repository.get(ReferrersList.create_id(org, repository, subject))
                listing.observe(descriptors, checked_at, shown)
            except AggregateNotFoundError:
                listing = ReferrersList(org=org, repository=repository, subject=subject, descriptors=descriptors,
                                        checked_at=checked_at)
            return [listing] if listing.pending_events else []
        self._save_with_retry(changes)

    def _observed_tag(self, org, repository, tag, digest, media_type, checked_at) -> TagResolution:
        try:
            resolution = self.repository.get(TagResolution.create_id(org, repository, tag))
            resolution.observe(digest, media_type, checked_at)
        except AggregateNotFoundError:
            resolution = TagResolution(org=org, repository=repository, tag=tag, digest=digest,
                                       media_type=media_type, checked_at=checked_at)
        return resolution

    def _save_with_retry(self, changes) -> None:
        """Concurrent writers of the same tag or manifest: reload and apply again (content-addressed facts)."""
        for _ in range(3):
            try:
                self.save(*changes())
                return
            except IntegrityError:
                continue
        raise RuntimeError("could not record the change after concurrent updates")

    def record_blob(self, org: str, repository: str, digest: str, size: int, cached_at: float,
                    generation: int = 1) -> None:
        if self._exists(CachedBlob.create_id(org, digest, generation)):
            # Known to this org, yet fetched: storage had deleted it. The reaper must learn it is back.
            self.blob_restored(digest, size, cached_at)
            return
        self._save_new(CachedBlob(org=org, repository=repository, digest=digest, size=size, cached_at=cached_at,
                                  generation=generation))

    def record_corruption(self, org: str, repository: str, digest: str, detail: str, detected_at: float) -> None:
        self.save(CorruptBlob(org=org, repository=repository, digest=digest, detail=detail, detected_at=detected_at))

    def holds_blob(self, org: str, digest: str, generation: int = 1) -> bool:
        """Whether this org's pulls brought the blob in (a primary-key read of the event store)."""
        return self._exists(CachedBlob.create_id(org, digest, generation))

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    def _save_new(self, aggregate) -> None:
        try:
            self.save(aggregate)
        except IntegrityError:
            pass  # another request recorded the same content first: content-addressed, so the same fact
