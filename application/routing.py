"""Which org a /v2/<name>/... request goes to: a named org, containerd's ?ns=, or the default org."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from application.errors import OrgUnknown
from domain.names import InvalidName
from domain.org import InvalidOrgSettings, normalize_upstream

RELOAD_AFTER = 0.25   # seconds; bounds how often unroutable requests re-read the orgs view


class OrgRowLike(Protocol):
    name: str
    settings: dict


class OrgListing(Protocol):
    """The orgs read model (projections `orgs`): every org that is not deleted."""

    def list_orgs(self) -> Iterable[OrgRowLike]: ...


@dataclass(frozen=True)
class Route:
    org: str
    repository: str        # the repository inside the org (what OrgConfig.target() expects)
    ns: str = ""           # the ?ns= value the route honoured; the edge echoes it as OCI-Namespace


@dataclass(frozen=True)
class _Mirror:
    name: str
    host: str
    namespace: str
    default: bool


def upstream_host(upstream: str) -> str:
    """host[:port] of a registry URL or bare host; Docker Hub's aliases are one host."""
    host = urlsplit(normalize_upstream(upstream)).netloc.lower()
    # an ns carries no scheme, so a default port means the same host either way
    return host.removesuffix(":443").removesuffix(":80")


class OrgRouter:
    """Precedence: a first path component naming an org wins; else `ns`; else the default org.

    `is_org` is authoritative (the Registry, through OrgDirectory), so an org created through the
    admin API is routable at once by name. The list behind `ns` and the default org comes from the
    orgs view and is kept `ttl` seconds; admin writes call forget().
    """

    def __init__(self, is_org: Callable[[str], bool], listing: OrgListing, ttl: float = 2.0) -> None:
        self._is_org = is_org
        self._listing = listing
        self._ttl = ttl
        self._mirrors: list[_Mirror] = []
        self._loaded_at = self._expires = 0.0

    def forget(self) -> None:
        self._expires = 0.0

    def route(self, name: str, ns: str | None = None) -> Route:
        first, _, rest = name.partition("/")
        if self._is_org(first):
            if not rest:
                raise InvalidName(f"repository name {name!r} needs an organization and a path, "
                                  "as in <org>/<repository>")
            return Route(first, rest)
        if ns:
            return self._by_namespace(name, ns)
        default = self._default()
        if default is None:
            raise OrgUnknown(f"no cache organization named {first!r}, and no default organization for root paths",
                             org=first)
        return Route(default.name, name)

    def _by_namespace(self, name: str, ns: str) -> Route:
        """The org mirroring host `ns`: the longest matching namespace, else a whole-registry org."""
        try:
            host = upstream_host(ns)
        except InvalidOrgSettings:
            raise OrgUnknown(f"invalid ns parameter {ns!r}: expected a registry host", ns=ns) from None
        def matching() -> list[_Mirror]:
            return [m for m in self.mirrors() if m.host == host
                    and (not m.namespace or name.startswith(m.namespace + "/"))]

        candidates = matching() or self._reloaded(matching)
        if not candidates:
            raise OrgUnknown(f"no cache organization mirrors {ns}", ns=ns)
        # Most specific namespace first; among equals the default org, then by name (deterministic).
        best = min(candidates, key=lambda m: (-len(m.namespace), not m.default, m.name))
        repository = name[len(best.namespace) + 1:] if best.namespace else name
        return Route(best.name, repository, ns=ns)

    def _default(self) -> _Mirror | None:
        def defaults() -> list[_Mirror]:
            return [m for m in self.mirrors() if m.default]

        found = defaults() or self._reloaded(defaults)
        return min(found, key=lambda m: m.name) if found else None

    def mirrors(self) -> list[_Mirror]:
        now = time.monotonic()
        if now >= self._expires:
            self._mirrors = [_mirror(row) for row in self._listing.list_orgs()]
            self._loaded_at, self._expires = now, now + self._ttl
        return self._mirrors

    def _reloaded(self, find: Callable[[], list[_Mirror]]) -> list[_Mirror]:
        """A miss on a list older than RELOAD_AFTER reads it again: the view may just have caught up
        (first start, or an org created moments ago), and a miss would otherwise last the whole ttl."""
        if time.monotonic() - self._loaded_at < RELOAD_AFTER:
            return []
        self.forget()
        return find()


def _mirror(row: OrgRowLike) -> _Mirror:
    settings = row.settings
    try:
        host = upstream_host(settings.get("upstream", ""))
    except InvalidOrgSettings:
        host = ""  # cannot happen for a registered org (validated on apply); never matches an ns
    return _Mirror(row.name, host, settings.get("namespace", "") or "", bool(settings.get("default", False)))
