"""The CacheOrg aggregate: an organization bound to one upstream registry (or one namespace of it)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.names import InvalidName, repository_name

DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
DOCKER_HUB_URL = "https://registry-1.docker.io"
DEFAULT_STALENESS = 300
DEFAULT_MAX_STALE = 7 * 24 * 3600
DEFAULT_NEGATIVE_CACHE = 30
DENIED_POLICIES = ("serve-stale", "refuse")  # what a cached tag gets when upstream answers 401/403

# Settings an admin may change; each change is recorded as one Reconfigured event.
SETTINGS = ("upstream", "namespace", "staleness_seconds", "max_stale_seconds", "negative_cache_seconds",
            "on_upstream_denied", "rate_limit_floor", "username", "default")


class InvalidOrgSettings(ValueError):
    """Settings that would make an organization unusable."""


def normalize_upstream(upstream: str) -> str:
    """Registry base URL: https unless a scheme is given; Docker Hub's aliases mean registry-1."""
    value = upstream.strip().rstrip("/")
    if not value:
        raise InvalidOrgSettings("upstream must not be empty")
    if "://" not in value:
        if value.split("/")[0] in DOCKER_HUB_ALIASES:
            return DOCKER_HUB_URL
        value = "https://" + value
    scheme, _, rest = value.partition("://")
    if scheme not in ("http", "https") or not rest or "/" in rest:
        raise InvalidOrgSettings(f"upstream must be a registry base URL such as https://host[:port], got {upstream!r}")
    if rest in DOCKER_HUB_ALIASES:
        return DOCKER_HUB_URL
    return f"{scheme}://{rest}"


def normalize_settings(settings: dict) -> dict:
    out = dict(settings)
    out["upstream"] = normalize_upstream(out["upstream"])
    namespace = (out.get("namespace") or "").strip("/")
    if namespace:
        try:
            repository_name(namespace)
        except InvalidName as error:
            raise InvalidOrgSettings(f"namespace: {error}") from None
    out["namespace"] = namespace
    for key, default in (("staleness_seconds", DEFAULT_STALENESS), ("max_stale_seconds", DEFAULT_MAX_STALE),
                         ("negative_cache_seconds", DEFAULT_NEGATIVE_CACHE), ("rate_limit_floor", 0)):
        value = out.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidOrgSettings(f"{key} must be a number of seconds >= 0")
        out[key] = int(value)
    out["on_upstream_denied"] = out.get("on_upstream_denied") or "serve-stale"
    if out["on_upstream_denied"] not in DENIED_POLICIES:
        raise InvalidOrgSettings(f"on_upstream_denied must be one of {', '.join(DENIED_POLICIES)}")
    out["username"] = out.get("username") or ""
    out["default"] = bool(out.get("default", False))
    return {key: out[key] for key in SETTINGS}


def validate_org_name(name: str) -> str:
    # An org name is the first path component of every pull, so it follows the name grammar.
    try:
        repository_name(name)
    except InvalidName:
        raise InvalidOrgSettings(f"invalid organization name {name!r}") from None
    if "/" in name:
        raise InvalidOrgSettings(f"an organization name is one path component, got {name!r}")
    return name


class CacheOrg(Aggregate):
    class Registered(Aggregate.Created):
        name: str
        settings: dict

    class Reconfigured(Aggregate.Event):
        name: str
        changes: dict

    class Deleted(Aggregate.Event):
        name: str

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:org:{name}")

    @event(Registered)
    def __init__(self, name: str, settings: dict) -> None:
        self.name = name
        self.settings = dict(settings)
        self.deleted = False

    def reconfigure(self, settings: dict) -> None:
        """Record only what differs; re-applying the same settings records nothing (idempotent)."""
        changes = {key: value for key, value in settings.items() if self.settings.get(key) != value}
        if changes or self.deleted:
            self._reconfigured(name=self.name, changes=changes)

    @event(Reconfigured)
    def _reconfigured(self, name: str, changes: dict) -> None:
        self.settings.update(changes)
        self.deleted = False

    def delete(self) -> None:
        if not self.deleted:
            self._deleted(name=self.name)

    @event(Deleted)
    def _deleted(self, name: str) -> None:
        self.deleted = True

    # Views of the settings used on the hot path.
    @property
    def upstream(self) -> str:
        return self.settings["upstream"]


def upstream_repository(upstream: str, namespace: str, repository: str) -> str:
    """The repository path upstream for a repository pulled through an org.

    An org bound to a namespace prefixes it; Docker Hub maps one-word names to library/<name>.
    """
    path = f"{namespace}/{repository}" if namespace else repository
    if upstream == DOCKER_HUB_URL and "/" not in path:
        path = f"library/{path}"
    return path
