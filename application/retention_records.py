"""The CacheRecords commands of retention: evict an image, pin and unpin, record a flush, delete stored blobs."""

from __future__ import annotations

from eventsourcing.application import AggregateNotFoundError

from domain.cache import CachedManifest, TagResolution
from domain.retention import CacheFlush, ImagePin, StoredBlob


class RetentionCommands:
    """Mixed into CacheRecords: each method records its events in one transaction, before storage is touched."""

    def evict_image(self, org: str, repository: str, digest: str, *, children: list[str], tags: list[str],
                    bytes: int, reason: str, policy: str, actor: str, at: float) -> bool:
        """The image's manifest, its children and the tags still pointing at it leave the cache.

        Returns False when the image was already gone (another evictor, or a flush, got there first).
        """
        def changes() -> list:
            image = self._load(CachedManifest.create_id(org, repository, digest))
            if image is None or not image.held:
                return []
            image.evict(digest, tags, bytes, reason, policy, actor, at)
            out = [image]
            for child in children:
                manifest = self._load(CachedManifest.create_id(org, repository, child))
                if manifest is not None:
                    manifest.evict(digest, [], 0, reason, policy, actor, at)
                    out.append(manifest)
            for tag in tags:
                resolution = self._load(TagResolution.create_id(org, repository, tag))
                if resolution is not None and resolution.digest == digest:   # not moved meanwhile
                    resolution.drop(reason, at)
                    out.append(resolution)
            return [aggregate for aggregate in out if aggregate.pending_events]
        done: list = []

        def recorded() -> list:
            done[:] = changes()
            return done
        self._save_with_retry(recorded)
        return bool(done)

    def set_pin(self, org: str, repository: str, digest: str, *, pinned: bool, tag: str, actor: str,
                at: float) -> bool:
        """Pin (or unpin) an image; True when that changed something."""
        done: list = []

        def changes() -> list:
            pin = self._load(ImagePin.create_id(org, repository, digest))
            if pin is None:
                pin = ImagePin(org=org, repository=repository, digest=digest, tag=tag, actor=actor, at=at) \
                    if pinned else None
            elif pinned:
                pin.pin(tag, actor, at)
            else:
                pin.unpin(actor, at)
            done[:] = [pin] if pin is not None and pin.pending_events else []
            return done
        self._save_with_retry(changes)
        return bool(done)

    def record_flush(self, org: str, repository: str, tag: str, *, dry_run: bool, images: int, tags: int,
                     blobs: int, bytes: int, actor: str, at: float) -> None:
        self.save(CacheFlush(org=org, repository=repository, tag=tag, dry_run=dry_run, images=images, tags=tags,
                             blobs=blobs, bytes=bytes, actor=actor, at=at))

    def orphan_blob(self, digest: str, size: int, unreferenced_since: float, actor: str, at: float) -> None:
        """The decision to delete a blob no image references, recorded before storage deletes it."""
        def changes() -> list:
            blob = self._load(StoredBlob.create_id(digest)) or StoredBlob(digest=digest)
            blob.orphan(size, unreferenced_since, actor, at)
            return [blob] if blob.pending_events else []
        self._save_with_retry(changes)

    def blob_deleted(self, digest: str, actor: str, at: float) -> None:
        """Storage gave the blob's space back (recorded once, however many times the deletion ran)."""
        def changes() -> list:
            blob = self._load(StoredBlob.create_id(digest))
            if blob is None:
                return []
            blob.delete(actor, at)
            return [blob] if blob.pending_events else []
        self._save_with_retry(changes)

    def blob_restored(self, digest: str, size: int, at: float) -> None:
        """A deleted blob stored again (nothing recorded for a blob never deleted)."""
        def changes() -> list:
            blob = self._load(StoredBlob.create_id(digest))
            if blob is None:
                return []
            blob.restore(size, at)
            return [blob] if blob.pending_events else []
        self._save_with_retry(changes)

    def _load(self, aggregate_id):
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
