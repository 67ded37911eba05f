"""Admin use cases: create, change and delete organizations, and read what each one caches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from application.errors import EntrepotError, InvalidRequest, OrgUnknown
from application.orgs import OrgConfig, OrgDirectory
from application.cache_records import CacheRecords
from application.routing import OrgRowLike
from domain.org import InvalidOrgSettings, OrgSettings, validate_org_name
from domain.org_settings import MAX_PASSWORD
from application.paging import decode_cursor, encode_cursor, page_limit

log = logging.getLogger(__name__)
SETTLE_TIMEOUT = 2.0   # how long a write waits for the orgs view, so that list and routing see it


class OrgExists(EntrepotError):
    """An organization of that name already exists."""


class OrgConflict(EntrepotError):
    """The change contradicts another organization (e.g. a second default org)."""


class OrgFromConfig(EntrepotError):
    """The organization is defined by the configuration, which is applied again at every start."""


@dataclass(frozen=True)
class ConfiguredOrgs:
    """The orgs the configuration defines, and where: the API may not change or delete them.

    The configuration is applied at every start, so a change made through the API would be undone
    without a word at the next one; it is refused instead, naming the file to edit.
    """

    names: frozenset[str] = frozenset()
    source: str = ""   # the config file; empty: the built-in default org (no config file)

    def refuse_change(self, name: str) -> None:
        if name in self.names:
            where = self.source or "the server's configuration (no config file: the built-in default org)"
            raise OrgFromConfig(f"organization {name!r} is defined in {where}, which is applied at every start: "
                                "change it there and restart (orgs created through the API can be changed here)",
                                org=name)


# -- the views the admin reads (projections/), as the application sees them ------------------------
class OrgsReadModel(Protocol):
    def list_orgs(self) -> Iterable[OrgRowLike]: ...

    def wait(self, application_name: str, notification_id: int | None, timeout: float = 1.0) -> None: ...


class TagsReadModel(Protocol):
    def org_tag_page(self, org: str, after: tuple[str, str] | None, limit: int,
                     repository: str | None = None) -> list[Any]:
        """Rows with repository, tag, digest, media_type and checked_at after `after`, by repository and tag."""

    def org_tag_totals(self, org: str) -> tuple[int, int]:
        """(tags, repositories)."""


class BlobsReadModel(Protocol):
    def list_blobs(self, org: str, generation: int | None = None) -> list[Any]:
        """Rows with digest and size (of one generation of the org, if given)."""

    def blob_page(self, org: str, after: str | None, limit: int, generation: int | None = None) -> list[Any]:
        """Rows with digest, repository, size, cached_at, last_pulled and pull_count after `after`, by digest."""

    def org_blob_totals(self, org: str, generation: int | None = None) -> tuple[int, int]:
        """(blobs, bytes) of the org (of one generation of it, if given)."""


class CountersReadModel(Protocol):
    def counts(self, org: str | None = None, generation: int | None = None) -> dict[str, dict[str, int]]: ...


class OrgContent(Protocol):
    """What an org holds in the cache, and letting it all go (application.retention_admin.CacheRetention)."""

    def held(self, org: str) -> tuple[int, int]:
        """(images, bytes) the org holds, pinned ones included."""

    def release(self, org: str, actor: str) -> Any:
        """Unpin and flush everything the org holds, recorded with the actor; a FlushReport."""


class RateLimitReadings(Protocol):
    """The last upstream rate-limit reading per org (application.ratelimits.RateLimits)."""

    def latest(self, org: str) -> Any | None: ...


@dataclass(frozen=True)
class AdminViews:
    orgs: OrgsReadModel
    tags: TagsReadModel
    blobs: BlobsReadModel
    counters: CountersReadModel


# -- what the admin gets back ----------------------------------------------------------------------
class OrgSummary(OrgSettings, frozen=True, kw_only=True):
    """The org as the admin sees it: every setting, its name, and whether a password is stored."""

    name: str
    password_set: bool            # the password itself is never returned

    def __post_init__(self) -> None:
        """Built from an OrgConfig, already checked: nothing to normalise again."""


@dataclass(frozen=True)
class CachedTagRow:
    repository: str
    tag: str
    digest: str
    media_type: str
    checked_at: float


@dataclass(frozen=True)
class CachedBlobRow:
    digest: str
    repository: str
    size: int
    cached_at: float
    last_pulled: float | None
    pull_count: int


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None   # None: this was the last page


@dataclass(frozen=True)
class OrgDetails:
    """An org's settings and a summary of what it caches, the same size however much it caches: the tags
    and blobs themselves are paged (OrgAdmin.tags, OrgAdmin.blobs)."""

    organization: OrgSummary
    bytes_stored: int
    blob_count: int
    tag_count: int
    repository_count: int
    pulls: dict[str, int] = field(default_factory=dict)   # result -> count
    upstream_rate_limit: Any | None = None                # the last reading, None until one was seen
    pinned_bytes: int = 0                                 # usage of pinned images alone
    pinned_over_quota: bool = False                       # pins alone exceed quota_bytes: nothing evictable
    evictions: dict[str, dict] = field(default_factory=dict)   # reason -> {"count", "bytes"}


def summary(config: OrgConfig) -> OrgSummary:
    """The org as the admin sees it: every setting by name, the password only as set or not."""
    shown = {key: getattr(config, key) for key in OrgSettings.__struct_fields__}
    return OrgSummary(**shown, name=config.name, password_set=bool(config.password))


def invalid_settings(error: InvalidOrgSettings) -> InvalidRequest:
    message = str(error)
    return InvalidRequest(message, {error.field or "name": message})


class OrgAdmin:
    def __init__(self, directory: OrgDirectory, records: CacheRecords, views: AdminViews,
                 rate_limits: RateLimitReadings | None = None, on_change: Callable[[], None] = lambda: None,
                 configured: ConfiguredOrgs = ConfiguredOrgs(),
                 upstream_refusal: Callable[[str, str], str | None] = lambda org, upstream: None,
                 retention_usage: Callable[[str], dict] | None = None) -> None:
        """`upstream_refusal(org, upstream)`: why the SSRF policy refuses that upstream for that org, else None."""
        self.retention_usage = retention_usage   # bytes_stored as the quota counts it, pins, evictions
        self.content: OrgContent | None = None   # wired by the composition root: what delete --flush flushes
        self._directory = directory
        self._configured = configured
        self._upstream_refusal = upstream_refusal
        self._records = records
        self._views = views
        self.rate_limits = rate_limits        # wired by the composition root once readings exist
        self._on_change = on_change           # e.g. OrgRouter.forget

    def list(self) -> list[OrgSummary]:
        configs = (self._directory.get(row.name) for row in self._views.orgs.list_orgs())
        return [summary(config) for config in configs if config is not None]

    def show(self, name: str) -> OrgDetails:
        config = self._config(name)
        tags, repositories = self._views.tags.org_tag_totals(name)
        # Of this org only: a deleted org of the same name had its own (see CacheOrg.Recreated).
        blobs, blob_bytes = self._views.blobs.org_blob_totals(name, config.generation)
        reading = self.rate_limits.latest(name) if self.rate_limits is not None else None
        usage = self.retention_usage(name) if self.retention_usage is not None else {"bytes_stored": blob_bytes}
        return OrgDetails(summary(config), blob_count=blobs, tag_count=tags, repository_count=repositories,
                          pulls=self._views.counters.counts(name, config.generation).get(name, {}), upstream_rate_limit=reading, **usage)

    def tags(self, name: str, cursor: str | None = None, limit: int = 100, repository: str | None = None) -> Page:
        """The org's cached tags by repository and tag, a page at a time."""
        self._config(name)
        after = decode_cursor(cursor, 2)
        rows = self._views.tags.org_tag_page(name, after, page_limit(limit) + 1, repository)
        items = [CachedTagRow(r.repository, r.tag, r.digest, r.media_type, r.checked_at) for r in rows[:limit]]
        more = len(rows) > limit   # one row more than asked says whether a page follows, in the same query
        return Page(items, encode_cursor(items[-1].repository, items[-1].tag) if more else None)

    def blobs(self, name: str, cursor: str | None = None, limit: int = 100) -> Page:
        """The org's cached blobs by digest, a page at a time."""
        config = self._config(name)
        after = decode_cursor(cursor, 1)
        rows = self._views.blobs.blob_page(name, after[0] if after else None, page_limit(limit) + 1,
                                           config.generation)
        items = [CachedBlobRow(r.digest, r.repository, r.size, r.cached_at, r.last_pulled, r.pull_count)
                 for r in rows[:limit]]
        return Page(items, encode_cursor(items[-1].digest) if len(rows) > limit else None)

    def create(self, name: str, settings: dict, actor: str = "admin") -> OrgSummary:
        password = settings.get("password") or ""
        try:
            validate_org_name(name)
        except InvalidOrgSettings as error:
            raise InvalidRequest(str(error), {"name": str(error)}) from None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise InvalidRequest("password is too long", {"password": f"at most {MAX_PASSWORD} characters"})
        if self._records.get_org(name) is not None:
            raise OrgExists(f"organization {name!r} already exists", org=name)
        settings = dict(settings)
        password = settings.pop("password", None) or ""
        return self._apply(name, settings, password, before_write=lambda: self._release_leftovers(name, actor))

    def update(self, name: str, changes: dict, replace: bool = False) -> OrgSummary:
        """PATCH merges `changes` into the settings; PUT (`replace`) starts from the defaults.

        Either way an absent (None) password keeps the stored one: it is write-only, so a client
        that read the org cannot send it back. An empty password clears it.
        """
        current = self._config(name)
        self._configured.refuse_change(name)
        changes = dict(changes)
        password = changes.pop("password", None)
        base = {} if replace else current.settings.as_event()
        if password is not None and len(password) > MAX_PASSWORD:
            raise InvalidRequest("password is too long", {"password": f"at most {MAX_PASSWORD} characters"})
        return self._apply(name, {**base, **changes}, current.password if password is None else password)

    def delete(self, name: str, *, flush: bool = False, actor: str = "admin") -> Any | None:
        """Delete the org; with `flush`, everything it holds leaves the cache first (a FlushReport).

        Without `flush` an org that still holds images is refused: deleting them costs upstream
        pulls to bring back, so the admin says so. Either way a new org of that name starts clean:
        it is the next generation (CacheOrg.Recreated), with counters and holdings of its own.
        """
        self._config(name)   # an unknown name is a 404 before anything else
        self._configured.refuse_change(name)
        report = None
        if self.content is not None:
            if flush:
                report = self.content.release(name, actor)
            else:
                images, size = self.content.held(name)
                if images:
                    raise OrgConflict(f"organization {name!r} still caches {images} images ({size} bytes): delete "
                                      f"it with its cache (`entrepot org delete {name} --flush`, or "
                                      "`?flush=true`), or flush it first", org=name)
        if not self._directory.delete(name):
            raise OrgUnknown(f"no cache organization named {name!r}", org=name)
        self._settle()
        return report

    def _release_leftovers(self, name: str, actor: str) -> None:
        """A name deleted by an older version (which kept the cache) may still hold images: they leave with
        the new org's creation, recorded as a flush by its creator, so the new org starts clean."""
        if self.content is not None and self.content.held(name)[0]:
            report = self.content.release(name, actor)
            log.info("%s re-created organization %s: the %d images its deleted namesake left were flushed",
                     actor, name, report.images)

    def _apply(self, name: str, settings: dict, password: str,
               before_write: Callable[[], None] = lambda: None) -> OrgSummary:
        # Everything is validated before the first write, so a refused request changes nothing.
        if not settings.get("upstream"):
            raise InvalidRequest("upstream is required", {"upstream": "required: the registry base URL"})
        try:
            normalized = OrgSettings.parse(settings).as_event()
        except InvalidOrgSettings as error:
            raise invalid_settings(error) from None
        current = self._directory.get(name)
        if current is None or current.upstream != normalized["upstream"]:
            if refusal := self._upstream_refusal(name, normalized["upstream"]):
                message = f"upstream: refused: {refusal}"
                raise InvalidRequest(message, {"upstream": message})
        if normalized["default"]:
            other = next((row.name for row in self._views.orgs.list_orgs()
                          if row.settings.get("default") and row.name != name), None)
            if other is not None:
                raise OrgConflict(f"organization {other!r} is already the default for root paths; "
                                  "unset its default first", org=other)
        before_write()
        self._directory.apply(name, {**normalized, "password": password})
        self._settle()
        return summary(self._config(name))

    def _config(self, name: str) -> OrgConfig:
        config = self._directory.get(name)
        if config is None:
            raise OrgUnknown(f"no cache organization named {name!r}", org=name)
        return config

    def _settle(self) -> None:
        """Wait (briefly) until the orgs view has our write, so list and routing agree with it."""
        position = self._records.recorder.max_notification_id()
        try:
            self._views.orgs.wait(self._records.name, position, timeout=SETTLE_TIMEOUT)
        except TimeoutError:
            log.warning("the orgs view has not caught up after %ss; listings may lag", SETTLE_TIMEOUT)
        self._on_change()
