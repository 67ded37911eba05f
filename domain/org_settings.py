"""An organization's settings, declared once: type, default, bounds and meaning of each; validates itself.

The config loader, the admin API bodies and answers, the CLI flags and the CacheOrg events all
derive from `OrgSettings` (see `derived_struct`), so a new setting is added here and nowhere else.
The upstream password is not a setting: it lives encrypted in the Credentials application.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from msgspec.structs import fields as struct_fields
from msgspec.structs import force_setattr

from domain.names import NAME_PATTERN, InvalidName, repository_name
from domain.repository_patterns import MAX_PATTERNS, PATTERN, RepositoryAccess, repository_access

DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
DOCKER_HUB_URL = "https://registry-1.docker.io"
DENIED_POLICIES = ("serve-stale", "refuse")  # what a cached tag gets when upstream answers 401/403
MAX_SECONDS = 10 * 365 * 24 * 3600          # ten years: longer is a typo, and 10**30 overflows the databases
MAX_ORG_NAME = 64
MAX_URL = 2048
MAX_NAMESPACE = 255                          # the distribution spec's bound on a whole repository name
MAX_USERNAME = 256
MAX_PASSWORD = 4096                          # registry tokens used as passwords run to a few KiB
MAX_QUOTA = 2**60                            # an exbibyte: larger is a typo
EVICTION_POLICIES = ("lru", "lfu")

_NAME = re.compile(NAME_PATTERN)
Seconds = Annotated[int, Meta(ge=0, le=MAX_SECONDS)]
Pattern = Annotated[str, Meta(min_length=1, max_length=MAX_NAMESPACE, pattern=PATTERN)]


class InvalidOrgSettings(ValueError):
    """Settings that would make an organization unusable; `field` names the setting at fault."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class OrgSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an admin may set on an org; each change is recorded as one CacheOrg.Reconfigured event."""

    upstream: Annotated[str, Meta(min_length=1, max_length=MAX_URL, description=(
        "registry base URL; https unless a scheme is given; docker.io means Docker Hub"))]
    namespace: Annotated[str, Meta(max_length=MAX_NAMESPACE, description=(
        "cache only this upstream namespace, e.g. library"))] = ""
    staleness_seconds: Annotated[Seconds, Meta(description=(
        "a cached tag is served with no upstream contact this long"))] = 300
    max_stale_seconds: Annotated[Seconds, Meta(description=(
        "past staleness, a cached tag is served this long when upstream fails"))] = 7 * 24 * 3600
    negative_cache_seconds: Annotated[Seconds, Meta(description=(
        "remember an upstream 'manifest unknown' this long (0: off)"))] = 30
    on_upstream_denied: Annotated[Literal["serve-stale", "refuse"], Meta(description=(
        "what a cached tag gets when upstream answers 401/403"))] = "serve-stale"
    rate_limit_floor: Annotated[int, Meta(ge=0, le=1_000_000, description=(
        "serve stale instead of spending the last upstream pulls (0: off)"))] = 0
    username: Annotated[str, Meta(max_length=MAX_USERNAME, description=(
        "upstream user (its password is stored encrypted, apart)"))] = ""
    default: Annotated[bool, Meta(description=(
        "serve root paths (/v2/library/...) from this org; at most one"))] = False
    allow: Annotated[tuple[Pattern, ...], Meta(max_length=MAX_PATTERNS, description=(
        "only these upstream repositories may be pulled (glob: library/*, bitnami/redis); empty: any"))] = ()
    deny: Annotated[tuple[Pattern, ...], Meta(max_length=MAX_PATTERNS, description=(
        "these upstream repositories are refused (glob), before any upstream contact"))] = ()
    # True by default, also for configured orgs: an upgrade must not lock existing clients out, and an org
    # recorded before this setting existed reads as open. Protect an org by setting it to false.
    anonymous_pull: Annotated[bool, Meta(description=(
        "pull without credentials; false: only robots and admins of this org"))] = True
    quota_bytes: Annotated[int, Meta(ge=0, le=MAX_QUOTA, description=(
        "bytes of distinct blobs and manifests the org's cached images may hold (0: unlimited)"))] = 0
    eviction_policy: Annotated[Literal["lru", "lfu"], Meta(description=(
        "over quota, evict the least recently pulled image (lru) or the least often pulled (lfu)"))] = "lru"

    def __post_init__(self) -> None:
        # Normalised forms are what events record, so re-applying an equivalent setting records nothing.
        force_setattr(self, "upstream", normalize_upstream(self.upstream))
        force_setattr(self, "namespace", normalize_namespace(self.namespace))

    @classmethod
    def parse(cls, values: dict[str, Any]) -> OrgSettings:
        """Strictly typed (no "300" for 300), bounded and normalised; else InvalidOrgSettings naming the field."""
        try:
            return msgspec.convert(values, cls, strict=True)
        except msgspec.ValidationError as error:
            raise invalid(error) from None

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> OrgSettings:
        """The settings an event recorded; events written before a setting existed get its default.

        Bounds added later must not make old events unreadable, so stored numbers are clamped.
        """
        known = {key: value for key, value in stored.items() if key in SETTINGS}
        for key in ("staleness_seconds", "max_stale_seconds", "negative_cache_seconds"):
            if isinstance(known.get(key), (int, float)) and not isinstance(known[key], bool):
                known[key] = min(max(int(known[key]), 0), MAX_SECONDS)
        if isinstance(known.get("username"), str):
            known["username"] = known["username"][:MAX_USERNAME]
        try:
            return msgspec.convert(known, cls, strict=False)
        except msgspec.ValidationError:
            # Recorded under older, looser URL or namespace rules: keep what was recorded, not lose the org.
            settings = msgspec.convert({**known, "upstream": "docker.io", "namespace": ""}, cls, strict=False)
            for key in ("upstream", "namespace"):
                if isinstance(known.get(key), str):
                    force_setattr(settings, key, known[key])
            return settings

    def as_event(self) -> dict[str, Any]:
        """The dict CacheOrg events carry (the shape stored since the first release; lists as JSON has them)."""
        values = msgspec.structs.asdict(self)
        values["allow"], values["deny"] = list(self.allow), list(self.deny)
        return values

    @property
    def access(self) -> RepositoryAccess:
        """The allow and deny lists, compiled (once per distinct pair of lists)."""
        return repository_access(self.allow, self.deny)


SETTINGS: tuple[str, ...] = OrgSettings.__struct_fields__

_AT = re.compile(r" - at `\$(?:\.(\w+))?")
_NAMED = re.compile(r"field `(\w+)`")


def invalid(error: msgspec.ValidationError) -> InvalidOrgSettings:
    """msgspec says `Expected int >= 0 - at $.staleness_seconds`; say `staleness_seconds: expected ...`."""
    text = str(error)
    at = _AT.search(text)
    message = text[:at.start()] if at else text
    field = (at[1] if at and at[1] else None) or ((named := _NAMED.search(message)) and named[1]) or ""
    if not field and ": " in message:   # raised by __post_init__: "upstream: ..."
        field = message.split(": ", 1)[0]
        return InvalidOrgSettings(message, field)
    message = message[:1].lower() + message[1:]
    return InvalidOrgSettings(f"{field}: {message}" if field else message, field)


def normalize_upstream(upstream: str) -> str:
    """Registry base URL: https unless a scheme is given; Docker Hub's aliases mean registry-1."""
    value = upstream.strip().rstrip("/")
    if not value:
        raise InvalidOrgSettings("upstream: must not be empty", "upstream")
    if "://" not in value:
        if value.split("/")[0] in DOCKER_HUB_ALIASES:
            return DOCKER_HUB_URL
        value = "https://" + value
    scheme, _, rest = value.partition("://")
    if "@" in rest.split("/")[0]:
        # Never echoed: what precedes the @ is a password. Credentials go in username and password.
        raise InvalidOrgSettings("upstream: must not contain user:password@; set username and password instead",
                                 "upstream")
    if (scheme not in ("http", "https") or not rest or "/" in rest
            or any(c.isspace() or not c.isprintable() or c in "?#@\\" for c in rest)):
        raise InvalidOrgSettings(f"upstream: must be a registry base URL such as https://host[:port], "
                                 f"got {upstream[:100]!r}", "upstream")
    if problem := authority_problem(rest):
        raise InvalidOrgSettings(f"upstream: {problem}, got {upstream[:100]!r}", "upstream")
    if rest in DOCKER_HUB_ALIASES:
        return DOCKER_HUB_URL
    return f"{scheme}://{rest}"


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")


def authority_problem(authority: str) -> str | None:
    """Why `host[:port]` is not a usable registry address (a hostname or IP and a real port), else None."""
    host, port = authority, ""
    if authority.startswith("["):
        if "]" not in authority:
            return "the host must be a hostname or an IP address"
        host, _, after = authority.partition("]")
        host += "]"
        if after and not after.startswith(":"):
            return "the host must be a hostname or an IP address"
        port = after[1:] if after else None
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
    else:
        port = None
    if not (_HOSTNAME.fullmatch(host) or _IPV6.fullmatch(host)) or len(host) > 253:
        return "the host must be a hostname or an IP address"
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return "the port must be a number from 1 to 65535"
    return None


def normalize_namespace(namespace: str) -> str:
    namespace = namespace.strip("/")
    if namespace:
        try:
            repository_name(namespace)
            if _NAME.fullmatch(namespace) is None:   # `$` in the name pattern lets a trailing newline through
                raise InvalidName(f"invalid repository name: {namespace!r}")
        except InvalidName as error:
            raise InvalidOrgSettings(f"namespace: {error}", "namespace") from None
    return namespace


def derived_struct(name: str, *, first: list[tuple] = (), last: list[tuple] = (), optional: bool = False,
                   **options: Any) -> type[msgspec.Struct]:
    """A struct with OrgSettings' fields (same types and bounds) between `first` and `last`.

    `optional`: every settings field may be absent (msgspec.UNSET), as in a partial update.
    Derived structs check types and bounds only; OrgSettings.parse still normalises and validates.
    """
    own = []
    for f in struct_fields(OrgSettings):
        if optional:
            own.append((f.name, f.type | msgspec.UnsetType, msgspec.UNSET))
        elif f.required:
            own.append((f.name, f.type))
        else:
            own.append((f.name, f.type, f.default))
    return msgspec.defstruct(name, [*first, *own, *last], **options)


DEFAULTS = OrgSettings(upstream="docker.io")   # every other setting at its default
