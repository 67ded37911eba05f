"""Which org a /v2/<name>/... request goes to: a named org, containerd's ?ns=, or the default org."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from application.errors import OrgUnknown
from domain.names import MAX_NAME_LENGTH, InvalidName, repository_name
from domain.org import InvalidOrgSettings, normalize_upstream, upstream_repository

RELOAD_AFTER = 0.25   # seconds; bounds how often unroutable requests re-read the orgs view

# containerd's ?ns= is a registry host: DNS labels or a bracketed IPv6 address, and an optional port.
# Anything else is refused, not echoed (it goes back out in OCI-Namespace and the tags/list Link).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REGISTRY_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
MAX_HOST_LENGTH = 253 + 6


class InvalidNamespace(InvalidName):
    """A ?ns= value that is not a registry host[:port]."""


def registry_host(ns: str) -> str:
    """`ns` if it is a registry host[:port], else InvalidNamespace."""
    if len(ns) > MAX_HOST_LENGTH or not _REGISTRY_HOST.match(ns):
        raise InvalidNamespace(f"invalid ns parameter {ns[:100]!r}: expected a registry host[:port]")
    return ns


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
    upstream: str = ""


def upstream_host(upstream: str) -> str:
    """host[:port] of a registry URL or bare host; Docker Hub's aliases are one host."""
    host = urlsplit(normalize_upstream(upstream)).netloc.lower()
    # an ns carries no scheme, so a default port means the same host either way
    return host.removesuffix(":443").removesuffix(":80")


class OrgRouter:
    """Precedence: a first path component naming an org wins; else `ns`; else the default org.

    `is_org` is authoritative (the CacheRecords, through OrgDirectory), so an org created through the
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
        """The org and repository `name` means. Raises InvalidName for a name the distribution spec
        refuses, or one the upstream would refuse once its namespace is prefixed: such a request
        must never reach the upstream (distribution answers 500 to a name over 255 characters)."""
        repository_name(name)
        if ns is not None:
            registry_host(ns)
        first, _, rest = name.partition("/")
        if self._is_org(first):
            if not rest:
                raise InvalidName(f"repository name {name!r} needs an organization and a path, "
                                  "as in <org>/<repository>")
            route = Route(first, rest)
        elif ns:
            route = self._by_namespace(name, ns)
        else:
            default = self._default()
            if default is None:
                raise OrgUnknown(f"no cache organization named {first!r}, and no default organization for "
                                 "root paths", org=first)
            route = Route(default.name, name)
        self._check_upstream_length(route)
        return route

    def _check_upstream_length(self, route: Route) -> None:
        # The org's namespace (and Docker Hub's library/) lengthen the name upstream. An org created a
        # moment ago may not be listed yet: then only the client's name was checked.
        mirror = next((m for m in self.mirrors() if m.name == route.org), None)
        if mirror is None:
            return
        upstream_name = upstream_repository(mirror.upstream, mirror.namespace, route.repository)
        if len(upstream_name) > MAX_NAME_LENGTH:
            raise InvalidName(f"repository name {upstream_name[:60]!r}... is {len(upstream_name)} characters "
                              f"upstream (org {route.org}), more than {MAX_NAME_LENGTH}")

    def _by_namespace(self, name: str, ns: str) -> Route:
        """The org mirroring host `ns`: the longest matching namespace, else a whole-registry org."""
        try:
            host = upstream_host(ns)
        except InvalidOrgSettings:
            raise InvalidNamespace(f"invalid ns parameter {ns!r}: expected a registry host") from None
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
        upstream = normalize_upstream(settings.get("upstream", ""))
        host = upstream_host(upstream)
    except InvalidOrgSettings:
        upstream = host = ""  # cannot happen for a registered org (validated on apply); never matches an ns
    return _Mirror(row.name, host, settings.get("namespace", "") or "", bool(settings.get("default", False)),
                   upstream)
