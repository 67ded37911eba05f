"""Organizations as the hot path sees them: settings plus credentials, cached in-process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from application.credentials import Credentials
from application.ports import UpstreamTarget
from application.registry import Registry
from domain.org import upstream_repository


@dataclass(frozen=True)
class OrgConfig:
    name: str
    upstream: str
    namespace: str
    staleness_seconds: int
    max_stale_seconds: int
    negative_cache_seconds: int
    on_upstream_denied: str
    rate_limit_floor: int
    username: str
    password: str
    default: bool

    def target(self, repository: str) -> UpstreamTarget:
        return UpstreamTarget(org=self.name, base_url=self.upstream,
                              repository=upstream_repository(self.upstream, self.namespace, repository),
                              username=self.username, password=self.password)


class OrgDirectory:
    """Loads orgs from the Registry; entries live a few seconds so admin changes apply quickly."""

    def __init__(self, registry: Registry, credentials: Credentials, ttl: float = 5.0) -> None:
        self._registry = registry
        self._credentials = credentials
        self._ttl = ttl
        self._cache: dict[str, tuple[float, OrgConfig | None]] = {}

    def get(self, name: str) -> OrgConfig | None:
        hit = self._cache.get(name)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        config = self._load(name)
        self._cache[name] = (time.monotonic() + self._ttl, config)
        return config

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    def apply(self, name: str, settings: dict) -> bool:
        """Create or update an org with its credentials; True when anything changed."""
        settings = dict(settings)  # the caller's dict stays as it was
        password = settings.pop("password", "") or ""
        changed = self._registry.apply_org(name, settings)
        before = self._credentials.get(name)
        self._credentials.set(name, settings.get("username", "") or "", password)
        self.forget(name)
        return changed or before != self._credentials.get(name)

    def delete(self, name: str) -> bool:
        """Delete an org; its upstream credentials go too, so a re-created org never inherits them."""
        deleted = self._registry.delete_org(name)
        if deleted:
            self._credentials.set(name, "", "")
        self.forget(name)
        return deleted

    def _load(self, name: str) -> OrgConfig | None:
        org = self._registry.get_org(name)
        if org is None:
            return None
        username, password = self._credentials.get(name)
        s = org.settings
        return OrgConfig(name=name, upstream=s["upstream"], namespace=s["namespace"],
                         staleness_seconds=s["staleness_seconds"], max_stale_seconds=s["max_stale_seconds"],
                         negative_cache_seconds=s.get("negative_cache_seconds", 30),
                         on_upstream_denied=s.get("on_upstream_denied", "serve-stale"),
                         rate_limit_floor=s.get("rate_limit_floor", 0),
                         username=username or s["username"], password=password, default=s["default"])
