"""Admin use cases of retention: flush (org, repository or tag; dry run first), pin and unpin, the
images in eviction order, and the log of evictions, flushes and pins."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from application.admin import InvalidRequest
from application.errors import EntrepotError, OrgUnknown
from domain.names import Digest, InvalidDigest, InvalidName, InvalidReference, Tag, repository_name
from domain.org_settings import OrgSettings
from domain.retention import plan_eviction

log = logging.getLogger(__name__)
SETTLE_TIMEOUT = 2.0   # a flush waits this long for the views, so that the next pull already misses
MAX_PAGE = 1000


class ImageUnknown(EntrepotError):
    """No cached image of the org answers to that repository and tag (or digest)."""


@dataclass(frozen=True)
class FlushReport:
    images: int
    tags: int
    blobs: int            # digests that leave storage (after the grace period): no other image references them
    bytes: int
    dry_run: bool
    pinned_kept: int      # pinned images in scope, never flushed


@dataclass(frozen=True)
class PinnedImage:
    org: str
    repository: str
    digest: str
    tags: list[str]
    bytes: int


@dataclass(frozen=True)
class ImagesPage:
    policy: str
    images: list[Any]     # projections.retention.ImageRank rows, in eviction order (pinned last)
    next_cursor: str | None


class CacheRetention:
    def __init__(self, records: Any, view: Any, org_settings: Callable[[str], OrgSettings | None],
                 clock: Any, settled: Callable[[], None] = lambda: None,
                 forget: Callable[[str, str | None], None] = lambda org, repository: None) -> None:
        self._records, self._view, self._org_settings, self._clock = records, view, org_settings, clock
        self._settled = settled   # waits (briefly) for the views to show what was just recorded
        self._forget = forget     # drops this process's cached tag entries of a flushed scope

    def images(self, org: str, cursor: str | None = None, limit: int = 100) -> ImagesPage:
        settings = self._settings(org)
        offset = _cursor(cursor)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}", {"limit": f"1 to {MAX_PAGE}"})
        rows = self._view.ranking(org, settings.eviction_policy, limit=limit + 1, offset=offset, victims_only=False)
        more = len(rows) > limit
        return ImagesPage(settings.eviction_policy, rows[:limit], str(offset + limit) if more else None)

    def flush(self, org: str, repository: str | None, tag: str | None, *, dry_run: bool, actor: str) -> FlushReport:
        """Evict the org's images in scope (reason `flush`); their bytes go after the grace period."""
        self._settings(org)
        return self._flush(org, repository, tag, dry_run=dry_run, actor=actor)

    def held(self, org: str) -> tuple[int, int]:
        """(images, bytes) the org still holds in the cache, pinned ones included."""
        # Read after the view shows what was just cached: an image pulled a moment before a delete must
        # still refuse the delete, not let it drop the org with that image cached.
        self._settled()
        images = self._view.held_images(org, None)
        return len(images), sum(image.bytes for image in images)

    def release(self, org: str, actor: str) -> FlushReport:
        """Everything the org holds leaves the cache, pinned images too: what deleting it with a flush does
        (and re-creating a name an older version deleted without one). Recorded as unpins and a flush,
        with the actor; works on an org already deleted."""
        for image in self._view.pinned(org):
            self._records.set_pin(org, image.repository, image.digest, pinned=False, tag="", actor=actor,
                                  at=self._clock.now())
        return self._flush(org, None, None, dry_run=False, actor=actor)

    def _flush(self, org: str, repository: str | None, tag: str | None, *, dry_run: bool, actor: str) -> FlushReport:
        if tag is not None and repository is None:
            raise InvalidRequest("a tag needs its repository", {"tag": "give repository too"})
        repository = _repository(repository) if repository is not None else None
        # The scope is read from the retention view: let it show what was cached up to now first, or an image
        # cached a moment ago (a re-pull just before the flush) escapes the flush and stays cached.
        self._settled()
        if tag is not None:
            digest = self._view.tag_digest(org, repository, _tag(tag))
            image = self._view.image(org, repository, digest) if digest else None
            if image is None:
                raise ImageUnknown(f"{org}/{repository}:{tag} is not cached", org=org)
            images = [image]
        else:
            images = self._view.held_images(org, repository)
        chosen = [image for image in images if not image.pinned]
        # Global scope: what leaves storage is what no image of any org still references.
        victims, _ = plan_eviction(0, 0, [], [self._view.candidate(image, None) for image in chosen])
        report = FlushReport(len(victims), sum(len(v.candidate.tags) for v in victims),
                             sum(len(v.freed_digests) for v in victims), sum(v.freed for v in victims), dry_run,
                             len(images) - len(chosen))
        now = self._clock.now()
        if not dry_run:
            for victim in victims:
                c = victim.candidate
                self._records.evict_image(c.org, c.repository, c.digest, children=c.children, tags=c.tags,
                                          bytes=victim.freed, reason="flush", policy="", actor=actor, at=now)
        self._records.record_flush(org, repository or "", tag or "", dry_run=dry_run, images=report.images,
                                   tags=report.tags, blobs=report.blobs, bytes=report.bytes, actor=actor, at=now)
        if not dry_run:
            log.info("%s flushed %s%s%s: %d images, %d bytes", actor, org, f"/{repository}" if repository else "",
                     f":{tag}" if tag else "", report.images, report.bytes)
            self._settled()
            self._forget(org, repository)
        return report

    def pin(self, org: str, repository: str, tag: str | None, digest: str | None, *, pinned: bool,
            actor: str) -> PinnedImage:
        self._settings(org)
        repository = _repository(repository)
        if (tag is None) == (digest is None):
            raise InvalidRequest("give either tag or digest", {"tag": "either tag or digest"})
        tag = _tag(tag) if tag is not None else None
        digest = _digest(digest) if digest is not None else None
        # Read from the retention view, which gathers commits for up to 0.1 s: let it show an image
        # cached a moment ago first (a script that pulls, then pins at once).
        self._settled()
        if tag is not None:
            digest = self._view.tag_digest(org, repository, tag)
        image = self._view.image(org, repository, digest) if digest else None
        if image is None and pinned:   # an unpin of an image evicted meanwhile still unpins it
            raise ImageUnknown(f"{org}/{repository}:{tag or digest} is not cached", org=org)
        self._records.set_pin(org, repository, digest, pinned=pinned, tag=tag or "", actor=actor, at=self._clock.now())
        self._settled()
        return PinnedImage(org, repository, digest, image.tags if image else [], image.bytes if image else 0)

    def pins(self, org: str) -> list[PinnedImage]:
        self._settings(org)
        return [PinnedImage(i.org, i.repository, i.digest, i.tags, i.bytes) for i in self._view.pinned(org)]

    def usage(self, org: str) -> dict[str, Any]:
        """What `GET /organizations/{name}` adds: usage, pinned bytes, eviction totals by reason."""
        settings = self._settings(org)
        pinned = self._view.pinned_usage(org)
        return {"bytes_stored": self._view.usage(org), "pinned_bytes": pinned,
                "pinned_over_quota": bool(settings.quota_bytes) and pinned > settings.quota_bytes,
                # The org's own generation (domain.org.CacheOrg.Recreated): a new org of a deleted name counts from zero.
                "evictions": {reason: {"count": n, "bytes": size}
                              for reason, (n, size) in sorted(self._view.eviction_totals(org).items())}}

    def log(self, org: str | None, kind: str | None, cursor: str | None, limit: int = 100,
            generation: int | None = None) -> tuple[list, str | None]:
        """A page of the log, newest first: of every generation of the org name, or of `generation`."""
        if kind is not None and kind not in ("eviction", "flush", "pin", "unpin"):
            raise InvalidRequest("kind must be eviction, flush, pin or unpin", {"kind": "eviction|flush|pin|unpin"})
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}", {"limit": f"1 to {MAX_PAGE}"})
        before = _cursor(cursor) if cursor is not None else None
        rows = self._view.log(org=org, kind=kind, before=before, limit=limit + 1, generation=generation)
        more = len(rows) > limit
        return rows[:limit], str(rows[limit - 1].id) if more else None

    def _settings(self, org: str) -> OrgSettings:
        settings = self._org_settings(org)
        if settings is None:
            raise OrgUnknown(f"no cache organization named {org!r}", org=org)
        return settings


def _cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidRequest("cursor must be a next_cursor this API returned", {"cursor": "invalid"})
    return int(cursor)


def _repository(repository: str) -> str:
    try:
        return repository_name(repository)
    except InvalidName as error:
        raise InvalidRequest(str(error), {"repository": str(error)}) from None


def _tag(tag: str) -> str:
    try:
        return str(Tag.parse(tag))
    except InvalidReference as error:
        raise InvalidRequest(str(error), {"tag": str(error)}) from None


def _digest(digest: str) -> str:
    try:
        return str(Digest.parse(digest))
    except InvalidDigest as error:
        raise InvalidRequest(str(error), {"digest": str(error)}) from None
