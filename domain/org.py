"""The CacheOrg aggregate: an organization bound to one upstream registry (or one namespace of it)."""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.names import MAX_NAME_LENGTH, NAME_PATTERN
from domain.org_settings import (DEFAULTS, DENIED_POLICIES, DOCKER_HUB_ALIASES, DOCKER_HUB_URL, MAX_ORG_NAME,
                                  SETTINGS, InvalidOrgSettings, OrgSettings, normalize_upstream)

# First path segments the HTTP edge routes itself (or may): an org of that name would be shadowed
# or would shadow them. tests/integration/test_admin_limits.py checks the app's routes are all here.
RESERVED_ORG_NAMES = frozenset({"api", "v1", "v2", "metrics", "healthz", "readyz", "livez", "schema", "token",
                                "docs", "static", "admin", "dashboard", "ui"})

__all__ = ["DEFAULTS", "DENIED_POLICIES", "DOCKER_HUB_ALIASES", "DOCKER_HUB_URL", "SETTINGS", "CacheOrg",
           "InvalidOrgSettings", "OrgSettings", "is_org_name", "normalize_settings", "normalize_upstream",
           "upstream_repository", "validate_org_name"]


def normalize_settings(settings: dict) -> dict:
    """The event form of settings given as a dict (absent ones at their defaults); InvalidOrgSettings if bad."""
    return OrgSettings.parse(settings).as_event()


_ORG_NAME = re.compile(NAME_PATTERN)


def is_org_name(name: str) -> bool:
    """Whether `name` could name an org, also one made before today's rules (reserved, up to 255 characters).

    Cheap, so lookups of junk (a NUL, 10 KiB of text) never reach a database.
    """
    return (isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and "/" not in name
            and _ORG_NAME.fullmatch(name) is not None)


def validate_org_name(name: str) -> str:
    # An org name is the first path component of every pull, so it follows the name grammar.
    if not isinstance(name, str) or len(name) > MAX_ORG_NAME:
        raise InvalidOrgSettings(f"name: an organization name has at most {MAX_ORG_NAME} characters", "name")
    if "/" in name:
        raise InvalidOrgSettings(f"an organization name is one path component, got {name!r}", "name")
    if not is_org_name(name):
        raise InvalidOrgSettings(f"invalid organization name {name!r}", "name")
    if name in RESERVED_ORG_NAMES:
        raise InvalidOrgSettings(f"name: {name!r} is reserved for the server's own paths", "name")
    return name


_DEFAULT_EVENT = DEFAULTS.as_event()


class CacheOrg(Aggregate):
    class Registered(Aggregate.Created):
        name: str
        settings: dict

    class Reconfigured(Aggregate.Event):
        name: str
        changes: dict

    class Deleted(Aggregate.Event):
        name: str

    class Recreated(Aggregate.Event):
        """A deleted org's name taken again: a new generation, which starts with nothing of the old one's.

        Pulls and holdings carry the generation they belong to, so the counters and listings of the new
        org start at zero while the audit keeps every pull of the old one as its own.
        """
        name: str
        settings: dict
        generation: int

    generation = 1   # read by aggregates (and snapshots) made before generations existed

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:org:{name}")

    @event(Registered)
    def __init__(self, name: str, settings: dict) -> None:
        self.name = name
        self.settings = dict(settings)
        self.deleted = False
        self.generation = 1

    def reconfigure(self, settings: dict) -> None:
        """Record only what differs; re-applying the same settings records nothing (idempotent).

        On a deleted org this is a re-creation: the given settings whole, as the next generation.
        """
        if self.deleted:
            self._recreated(name=self.name, settings=dict(settings), generation=self.generation + 1)
            return
        # A setting added after this org's events were written reads as its default, not as a change.
        changes = {key: value for key, value in settings.items()
                   if self.settings.get(key, _DEFAULT_EVENT.get(key)) != value}
        if changes:
            self._reconfigured(name=self.name, changes=changes)

    @event(Reconfigured)
    def _reconfigured(self, name: str, changes: dict) -> None:
        # Before generations existed a re-creation was recorded as this event; the new org was refused
        # unless the old one had left nothing under its name, so it stays in the same generation.
        self.settings.update(changes)
        self.deleted = False

    @event(Recreated)
    def _recreated(self, name: str, settings: dict, generation: int) -> None:
        self.settings = dict(settings)
        self.deleted = False
        self.generation = generation

    def delete(self) -> None:
        if not self.deleted:
            self._deleted(name=self.name)

    @event(Deleted)
    def _deleted(self, name: str) -> None:
        self.deleted = True

    @property
    def upstream(self) -> str:
        return self.settings["upstream"]

    @property
    def current(self) -> OrgSettings:
        """The settings as the value object (events written before a setting existed get its default)."""
        return OrgSettings.from_stored(self.settings)


def upstream_repository(upstream: str, namespace: str, repository: str) -> str:
    """The repository path upstream for a repository pulled through an org.

    An org bound to a namespace prefixes it; Docker Hub maps one-word names to library/<name>.
    """
    path = f"{namespace}/{repository}" if namespace else repository
    if upstream == DOCKER_HUB_URL and "/" not in path:
        path = f"library/{path}"
    return path
