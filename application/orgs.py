"""Organizations as the hot path sees them: the orgs view plus this process's own writes, cached in-process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import anyio.to_thread
from cachetools import LRUCache, TTLCache

from application.credentials import Credentials
from application.ports import OrgRecord, OrgsByName, UpstreamTarget
from application.cache_records import CacheRecords
from domain.org import OrgSettings, is_org_name, upstream_repository

log = logging.getLogger(__name__)


class OrgConfig(OrgSettings, frozen=True, kw_only=True):
    """An org's settings (the domain's OrgSettings) with its name and upstream credentials."""

    name: str
    password: str = ""
    generation: int = 1   # which org of that name: a deleted org's name taken again is the next one

    def __post_init__(self) -> None:
        """Built from settings already checked (or recorded under older rules): nothing to normalise again."""

    def target(self, repository: str) -> UpstreamTarget:
        path = upstream_repository(self.upstream, self.namespace, repository)
        return UpstreamTarget(org=self.name, generation=self.generation, base_url=self.upstream, repository=path,
                              username=self.username, password=self.password,
                              allow_listed=self.access.allowed_explicitly(path))

    def refusal(self, repository: str) -> str | None:
        """Why the allow/deny lists refuse `repository` (as the client names it), else None."""
        return self.access.refusal(upstream_repository(self.upstream, self.namespace, repository))

    @property
    def settings(self) -> OrgSettings:
        return OrgSettings.from_stored({key: getattr(self, key) for key in OrgSettings.__struct_fields__})


@dataclass(frozen=True)
class _Row:
    name: str
    settings: dict
    deleted: bool
    generation: int = 1


class RecordedOrgs:
    """OrgsByName read from the event store's aggregates: for tools and unit tests that run no orgs view."""

    def __init__(self, records: CacheRecords) -> None:
        self._records = records

    def get_org(self, name: str) -> OrgRecord | None:
        org = self._records.get_org(name)
        return None if org is None else _Row(name, org.settings, False, org.generation)


_MISSING = object()


class OrgDirectory:
    """Org settings by name, read from the orgs view (in a thread) and kept a few seconds.

    Read-your-writes: what this process applied is served at once, also while the view still
    lags, and until the view shows it (or `written_ttl` passes). Found and unknown names live in
    separate bounded caches, so a flood of unknown first path segments cannot evict real orgs.
    """

    def __init__(self, records: CacheRecords, credentials: Credentials, view: OrgsByName | None = None,
                 ttl: float = 5.0, written_ttl: float = 60.0, size: int = 1024, unknown_size: int = 4096) -> None:
        self._records = records
        self._credentials = credentials
        self._view = view if view is not None else RecordedOrgs(records)
        self._lock = threading.Lock()   # get() runs on the event loop's threads and in worker threads
        self._found: TTLCache = TTLCache(size, ttl) if ttl > 0 else None
        self._unknown: TTLCache = TTLCache(unknown_size, ttl) if ttl > 0 else None
        self._written: TTLCache = TTLCache(size, written_ttl)   # name -> OrgConfig, or None once deleted
        # What the view said last, past the TTL: served while the view cannot be read (a database
        # outage), so warm pulls of a known org go on. Bounded like the TTL caches.
        self._last_found: LRUCache = LRUCache(size)
        self._last_unknown: LRUCache = LRUCache(unknown_size)

    async def lookup(self, name: str) -> OrgConfig | None:
        """For the event loop: a cache hit answers at once; a miss reads the view in a thread."""
        hit = self._cached(name)
        if hit is not _MISSING:
            return hit
        if not is_org_name(name):   # junk never reaches the view, nor fills the caches
            return None
        return await anyio.to_thread.run_sync(self.get, name)

    def get(self, name: str) -> OrgConfig | None:
        """For callers already in a thread (admin use cases, CLI tools): may read the view."""
        hit = self._cached(name)
        if hit is not _MISSING:
            return hit
        if not is_org_name(name):
            return None
        try:
            config = self._load(name)
        except Exception as error:   # the view or the event store is down: what it said last still holds
            config = self._last_known(name)
            if config is _MISSING:
                raise
            log.warning("organization %s: the orgs view cannot be read (%s); using its settings read last",
                        name, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        self._remember(name, config)   # the view is tried again in `ttl` seconds, not on every request
        return config

    def forget(self, name: str) -> None:
        with self._lock:
            for cache in (self._found, self._unknown):
                if cache is not None:
                    cache.pop(name, None)

    def apply(self, name: str, settings: dict) -> bool:
        """Create or update an org with its credentials; True when anything changed."""
        settings = dict(settings)  # the caller's dict stays as it was
        password = settings.pop("password", "") or ""
        changed = self._records.apply_org(name, settings)
        before = self._credentials.get(name)
        username = settings.get("username", "") or ""
        self._credentials.set(name, username, password)
        recorded = self._records.get_org(name)
        self._wrote(name, None if recorded is None else
                    self._config(name, recorded.settings, (username, password), recorded.generation))
        return changed or before != (username, password)

    def delete(self, name: str) -> bool:
        """Delete an org; its upstream credentials go too, so a re-created org never inherits them."""
        deleted = self._records.delete_org(name)
        if deleted:
            self._credentials.set(name, "", "")
            self._wrote(name, None)
        return deleted

    def _cached(self, name: str) -> OrgConfig | None | object:
        # On the hot path: TTLCache.get costs several times [] (measured), hence try/except.
        with self._lock:
            if self._found is None:
                return _MISSING
            try:
                return self._found[name]
            except KeyError:
                return None if name in self._unknown else _MISSING

    def _remember(self, name: str, config: OrgConfig | None) -> None:
        with self._lock:
            if self._found is not None:
                (self._found if config is not None else self._unknown)[name] = config
            (self._last_found if config is not None else self._last_unknown)[name] = config
            (self._last_unknown if config is not None else self._last_found).pop(name, None)

    def _last_known(self, name: str) -> OrgConfig | None | object:
        with self._lock:
            if name in self._last_found:
                return self._last_found[name]
            return None if name in self._last_unknown else _MISSING

    def _wrote(self, name: str, config: OrgConfig | None) -> None:
        with self._lock:
            self._written[name] = config
        self.forget(name)
        self._remember(name, config)

    def _load(self, name: str) -> OrgConfig | None:
        row = self._view.get_org(name)
        live = row is not None and not row.deleted
        with self._lock:
            written = self._written.get(name, _MISSING)
        if written is not _MISSING:
            # The view has our write once it shows the same org (or its deletion); until then, ours wins.
            if (written is None and not live) or (written is not None and live and
                                                  OrgSettings.from_stored(row.settings) == written.settings
                                                  and _generation(row) == written.generation):
                with self._lock:
                    self._written.pop(name, None)
            else:
                return written
        if not live:
            return None
        return self._config(name, row.settings, self._credentials.get(name), _generation(row))

    @staticmethod
    def _config(name: str, stored: dict, credentials: tuple[str, str], generation: int) -> OrgConfig:
        settings = OrgSettings.from_stored(stored)
        username, password = credentials
        fields = {key: getattr(settings, key) for key in OrgSettings.__struct_fields__}
        fields["username"] = username or settings.username
        return OrgConfig(**fields, name=name, password=password, generation=generation)


def _generation(row: OrgRecord) -> int:
    return getattr(row, "generation", 1)   # an OrgsByName of a test may not know generations
