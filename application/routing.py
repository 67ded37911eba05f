"""Which org a /v2/<name>/... request goes to: a named org, containerd's ?ns=, or the default org."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from application.errors import OrgUnknown, ReadModelUnavailable
from domain.names import MAX_NAME_LENGTH, InvalidName, repository_name
from domain.org import InvalidOrgSettings, normalize_upstream, upstream_repository

RELOAD_AFTER = 0.25   # seconds; bounds how often unroutable requests re-read the orgs view
LISTING_TIMEOUT = 3.0  # seconds a read of the orgs view may take before routing gives up on it
log = logging.getLogger(__name__)

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
    # The org's settings as the lookup found them: the request's one org lookup, used by the cache.
    config: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Mirror:
    name: str
    host: str
    namespace: str
    default: bool
    upstream: str = ""
    anonymous_pull: bool = True


def upstream_host(upstream: str) -> str:
    """host[:port] of a registry URL or bare host; Docker Hub's aliases are one host."""
    host = urlsplit(normalize_upstream(upstream)).netloc.lower()
    # an ns carries no scheme, so a default port means the same host either way
    return host.removesuffix(":443").removesuffix(":80")


class OrgRouter:
    """Precedence: a first path component naming an org wins; else `ns`; else the default org.

    `lookup` is authoritative (OrgDirectory.lookup: the orgs view plus this process's own writes, cached),
    so an org created through the admin API is routable at once by name; it answers the org's settings,
    which the route carries on. The list behind `ns` and the default org comes from the orgs view, read
    in a thread, and is kept `ttl` seconds; admin writes call forget(). Nothing here waits on the
    database on the event loop: when the view cannot be read, the last list read is used.
    """

    def __init__(self, lookup: Callable[[str], Awaitable[Any]], listing: OrgListing, ttl: float = 2.0) -> None:
        self._lookup = lookup
        self._listing = listing
        self._ttl = ttl
        self._mirrors: list[_Mirror] = []
        self._loaded_at = self._expires = 0.0

    def forget(self) -> None:
        self._expires = 0.0

    async def route(self, name: str, ns: str | None = None) -> Route:
        """The org and repository `name` means. Raises InvalidName for a name the distribution spec
        refuses, or one the upstream would refuse once its namespace is prefixed: such a request
        must never reach the upstream (distribution answers 500 to a name over 255 characters)."""
        repository_name(name)
        if ns is not None:
            registry_host(ns)
        first, _, rest = name.partition("/")
        config = await self._lookup(first)
        if config is not None:
            if not rest:
                raise InvalidName(f"repository name {name!r} needs an organization and a path, "
                                  "as in <org>/<repository>")
            route = Route(first, rest, config=config)
        elif ns:
            route = await self._by_namespace(name, ns)
        else:
            default = await self._default()
            if default is None:
                raise OrgUnknown(f"no cache organization named {first!r}, and no default organization for "
                                 "root paths", org=first)
            route = Route(default.name, name)
        if route.config is None:
            config = await self._lookup(route.org)
            if config is None:  # listed by a view that lags a deletion
                raise OrgUnknown(f"no cache organization named {route.org!r}", org=route.org)
            route = Route(route.org, route.repository, route.ns, config=config)
        await self._check_upstream_length(route)
        return route

    async def _check_upstream_length(self, route: Route) -> None:
        # The org's namespace (and Docker Hub's library/) lengthen the name upstream. The looked-up
        # settings say how; without them (a bare lookup), the listed org does, or only the client's name
        # was checked (an org created a moment ago, not listed yet).
        config = route.config
        mirror = config if hasattr(config, "namespace") and hasattr(config, "upstream") else \
            next((m for m in await self.mirrors() if m.name == route.org), None)
        if mirror is None:
            return
        upstream_name = upstream_repository(mirror.upstream, mirror.namespace, route.repository)
        if len(upstream_name) > MAX_NAME_LENGTH:
            raise InvalidName(f"repository name {upstream_name[:60]!r}... is {len(upstream_name)} characters "
                              f"upstream (org {route.org}), more than {MAX_NAME_LENGTH}")

    async def _by_namespace(self, name: str, ns: str) -> Route:
        """The org mirroring host `ns`: the longest matching namespace, else a whole-registry org."""
        try:
            host = upstream_host(ns)
        except InvalidOrgSettings:
            raise InvalidNamespace(f"invalid ns parameter {ns!r}: expected a registry host") from None
        def matching(mirrors: list[_Mirror]) -> list[_Mirror]:
            return [m for m in mirrors if m.host == host
                    and (not m.namespace or name.startswith(m.namespace + "/"))]

        candidates = matching(await self.mirrors()) or matching(await self._reloaded())
        if not candidates:
            raise OrgUnknown(f"no cache organization mirrors {ns}", ns=ns)
        # Most specific namespace first; among equals the default org, then by name (deterministic).
        best = min(candidates, key=lambda m: (-len(m.namespace), not m.default, m.name))
        repository = name[len(best.namespace) + 1:] if best.namespace else name
        return Route(best.name, repository, ns=ns)

    async def _default(self) -> _Mirror | None:
        def defaults(mirrors: list[_Mirror]) -> list[_Mirror]:
            return [m for m in mirrors if m.default]

        found = defaults(await self.mirrors()) or defaults(await self._reloaded())
        return min(found, key=lambda m: m.name) if found else None

    async def all_open(self) -> bool:
        """Whether every org lets anonymous clients pull (GET /v2/ then answers 200 without credentials)."""
        return all(m.anonymous_pull for m in await self.mirrors())

    async def mirrors(self) -> list[_Mirror]:
        now = time.monotonic()
        if now >= self._expires:
            try:
                with anyio.fail_after(LISTING_TIMEOUT):
                    rows = await anyio.to_thread.run_sync(lambda: list(self._listing.list_orgs()),
                                                          abandon_on_cancel=True)
            except Exception as error:
                if not self._loaded_at:
                    raise ReadModelUnavailable(f"cannot read the organizations: {type(error).__name__}") from None
                # The database is away: route by the last list read, and try again after one ttl.
                log.warning("routing by the organizations read %.0f s ago: the orgs view is unavailable (%s)",
                            now - self._loaded_at, type(error).__name__)
                self._expires = now + self._ttl
                return self._mirrors
            self._mirrors = [_mirror(row) for row in rows]
            self._loaded_at, self._expires = now, now + self._ttl
        return self._mirrors

    async def _reloaded(self) -> list[_Mirror]:
        """A miss on a list older than RELOAD_AFTER reads it again: the view may just have caught up
        (first start, or an org created moments ago), and a miss would otherwise last the whole ttl."""
        if time.monotonic() - self._loaded_at < RELOAD_AFTER:
            return []
        self.forget()
        return await self.mirrors()


def _mirror(row: OrgRowLike) -> _Mirror:
    settings = row.settings
    try:
        upstream = normalize_upstream(settings.get("upstream", ""))
        host = upstream_host(upstream)
    except InvalidOrgSettings:
        upstream = host = ""  # cannot happen for a registered org (validated on apply); never matches an ns
    return _Mirror(row.name, host, settings.get("namespace", "") or "", bool(settings.get("default", False)),
                   upstream, bool(settings.get("anonymous_pull", True)))
