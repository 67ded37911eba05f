"""Settings from a TOML file (stdlib tomllib), strictly typed by msgspec, with environment and command-line overrides.

Nothing reads them globally. Every key has one declared type: `redirect = "no"` or `port = "abc"`
is a one-line SettingsError naming the file and the key, never a coerced value or a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from domain.analytics import DEFAULT_MINUTE_DAYS
from domain.org import InvalidOrgSettings, OrgSettings as DomainOrgSettings, validate_org_name
from domain.org_settings import MAX_ORG_NAME, MAX_PASSWORD, derived_struct
from domain.upstream_policy import OPERATOR, parse_networks
from infra.upstream.egress import egress_proxy

DEFAULT_PORT = 5000
ENGINES = ("uvicorn", "granian")
DEFAULT_ENGINE = "granian"
Text = Annotated[str, Meta(max_length=4096)]
Seconds = Annotated[float, Meta(ge=0, le=86400 * 365)]
MiB = 1024 * 1024
Bytes = Annotated[int, Meta(ge=0, le=2**60)]


class SettingsError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def _as_command(self) -> dict:
    """The settings an org is registered with (everything but its name)."""
    return {name: getattr(self, name) for name in self.__struct_fields__ if name != "name"}


# An [[organizations]] entry: its name, the domain's settings (declared once, in domain/org_settings.py)
# and the upstream password, which the Credentials application keeps encrypted.
OrgSettings = derived_struct(
    "OrgSettings", first=[("name", Annotated[str, Meta(min_length=1, max_length=MAX_ORG_NAME)])],
    last=[("password", Annotated[str, Meta(max_length=MAX_PASSWORD)], "")],
    frozen=True, forbid_unknown_fields=True, namespace={"as_command": _as_command, "__module__": __name__})

DEFAULT_ORGS = (OrgSettings(name="hub", upstream="docker.io"),)


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class DatabaseSettings(_Section, frozen=True):
    url: Text = ""                     # postgresql://...; empty: embedded SQLite under data_dir
    schema: Annotated[str, Meta(min_length=1, max_length=63)] = "entrepot"   # PostgreSQL schema; created if missing
    run_projections: bool = True       # PostgreSQL: serve runs the projections (one runner each across processes)
    # Pulls served while the event store is down, kept in memory until it is back (~1 KiB each); beyond, the oldest are lost.
    pull_backlog: Annotated[int, Meta(ge=0, le=10_000_000)] = 100_000


class StorageSettings(_Section, frozen=True):
    backend: Literal["filesystem", "s3"] = "filesystem"
    bucket: Text = ""
    endpoint_url: Text = ""            # empty: AWS; credentials from the standard AWS environment
    region: Text = "us-east-1"
    prefix: Text = ""                  # key prefix inside the bucket
    redirect: bool = False             # True: 307 to presigned URLs for warm blobs
    # Free space under data_dir (blobs, or the S3 spool) as /readyz judges it: below min_free_bytes it
    # says storage `full` (unavailable), below low_free_bytes `low` (degraded). Pulls are served either way.
    min_free_bytes: Bytes = 32 * MiB
    low_free_bytes: Bytes = 1024 * MiB
    # A cap on everything stored, across orgs (0: none); over it the evictor takes from the whole cache.
    max_bytes: Bytes = 0
    # How long a blob no image references any more stays stored before it is deleted (clients that
    # already hold a manifest, and sends already started, still get its bytes).
    delete_grace_seconds: Seconds = 60.0
    # An nginx in front sends published blob files itself: a warm blob GET is answered with
    # `X-Accel-Redirect: <accel_redirect>sha256/ab/<digest>`, an internal nginx location aliased to
    # <data_dir>/storage/blobs/ (infra/deploy/nginx/nginx.conf). Empty: Entrepôt sends the bytes.
    accel_redirect: Annotated[str, Meta(max_length=256, pattern=r"^$|^/[A-Za-z0-9._~/-]*/$")] = ""


class UpstreamSettings(_Section, frozen=True):
    connect_timeout: Seconds = 5.0         # seconds to connect to an upstream
    read_timeout: Seconds = 30.0           # seconds a response may stall between two chunks
    failures_before_backoff: Annotated[int, Meta(ge=1, le=1_000_000)] = 3   # failed requests in the window before back-off
    backoff_failure_ratio: Annotated[float, Meta(gt=0, le=1)] = 0.5   # ... if at least this share of the window's requests
    backoff_repositories: Annotated[int, Meta(ge=1, le=1_000_000)] = 2  # ... and failed for this many distinct repositories
    backoff_window_seconds: Annotated[float, Meta(gt=0, le=86400)] = 30.0  # the sliding window those are counted in
    backoff_seconds: Seconds = 15.0        # how long it is then treated as unavailable
    # The outbound HTTP(S) proxy every upstream request goes through (README: behind a proxy). Empty: the
    # environment's HTTPS_PROXY / HTTP_PROXY / NO_PROXY; "none": direct, whatever the environment says.
    proxy: Text = ""
    no_proxy: tuple[Annotated[str, Meta(max_length=255)], ...] = ()   # hosts, .domains, IPs, CIDRs reached directly
    # A client that GETs an image manifest the cache fetches cold asks for its blobs next: that many of
    # them (per process) are fetched at once, before the client asks. 0: only when asked.
    prefetch_blobs: Annotated[int, Meta(ge=0, le=64)] = 8


class RedisSettings(_Section, frozen=True):
    url: Text = ""                     # empty: in-process coordination only
    key_prefix: Text = "entrepot:"     # every key Entrepôt writes starts with this
    fill_wait_seconds: Seconds = 60.0  # how long a replica waits for another's fill before fetching itself
    tag_cache_seconds: Seconds = 5.0   # life of a tag lookup shared by replicas


class AnalyticsSettings(_Section, frozen=True):
    # How often each process records its blob traffic (one event per org); a SIGKILL loses at most this much.
    traffic_interval_seconds: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    # Minute buckets are kept this many days back; older figures stay in hour and day buckets. 0: forever.
    minute_days: Annotated[int, Meta(ge=0, le=36500)] = DEFAULT_MINUTE_DAYS


class AuditSettings(_Section, frozen=True):
    # A seal of the audit chain (its heads as an AuditSeal event) every this many seconds when it moved; 0: off.
    seal_interval_seconds: Annotated[float, Meta(ge=0, le=86400 * 31)] = 0.0
    # Each seal is also appended here as one JSON line, for the operator to ship elsewhere ("": not written).
    seal_file: Text = ""
    # Pull events older than this many days are archived to blob storage, then leave the event store; 0: kept forever.
    retain_days: Annotated[float, Meta(ge=0, le=36500)] = 0.0


class ServerSettings(_Section, frozen=True):
    host: Text = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = DEFAULT_PORT  # 0: any free port (serve prints it)
    data_dir: Text = "entrepot-data"
    secret_key: Text = ""
    log_level: Literal["debug", "info", "warning", "error", "critical", "DEBUG", "INFO", "WARNING", "ERROR",
                       "CRITICAL"] = "info"
    admin_token: Text = ""
    engine: str = DEFAULT_ENGINE       # checked below, so that the message lists the choices
    pull_through: Literal["on", "allow-list", "off"] = "on"   # what a miss may fetch (README: pull-through modes)
    # Reverse proxies (IP addresses) whose X-Forwarded-For names the client: nginx in front (infra/deploy/nginx).
    trusted_proxies: tuple[Annotated[str, Meta(max_length=64)], ...] = ()


class SecuritySettings(_Section, frozen=True):
    # Loopback and private networks (CIDR) that upstreams of orgs made through the admin API may reach.
    # The config file's own orgs may always reach them; link-local and metadata addresses never.
    allowed_upstream_networks: tuple[Annotated[str, Meta(max_length=64)], ...] = ()


class ConfigFile(_Section, frozen=True):
    """The whole TOML document; an unknown section or key is an error, like a wrong type."""

    server: ServerSettings = ServerSettings()
    organizations: tuple[OrgSettings, ...] | None = None
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    redis: RedisSettings = RedisSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    security: SecuritySettings = SecuritySettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    audit: AuditSettings = AuditSettings()


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = "entrepot-data"
    secret_key: str = ""              # AES key for upstream credentials; generated under data_dir when empty
    organizations: tuple[Any, ...] = DEFAULT_ORGS     # OrgSettings entries
    config_file: str = ""             # where the settings (and so the organizations) came from; "": defaults
    log_level: str = "info"
    admin_token: str = ""             # admin API token ($ENTREPOT_ADMIN_TOKEN); generated when empty
    engine: str = DEFAULT_ENGINE      # the HTTP server: "granian" (sends warm blobs by pathsend) or "uvicorn"
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # "on": fetch any miss; "allow-list": only repositories an org's `allow` names; "off": serve what is cached
    pull_through: str = "on"
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    trusted_proxies: tuple[str, ...] = ()   # reverse proxies whose X-Forwarded-For names the client


_AT = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")
_EXPECTED = re.compile(r"^Expected `([^`]+)`(.*?)(?:, got `(\w+)`)?$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`$")
_KINDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string", "object": "a table",
          "array": "an array", "null": "nothing"}


def _where(path: str, document: dict) -> tuple[str, Any]:
    """`$.storage.redirect` -> ("[storage] redirect", the value); organizations by index and name."""
    steps = re.findall(r"\.(\w+)|\[(\d+)\]", path)
    value: Any = document
    names: list[str] = []
    for key, index in steps:
        if index:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
            org = value.get("name") if isinstance(value, dict) else None
            names[-1] = f"[[organizations]] {index}" + (f" ({org})" if isinstance(org, str) else "")
        else:
            value = value.get(key) if isinstance(value, dict) else None
            names.append(f"[{key}]" if len(names) == 0 else key)
    return " ".join(names), value


def _describe(value: Any) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_error(source: str, error: msgspec.ValidationError, document: dict) -> SettingsError:
    """One line: `entrepot.toml: [storage] redirect: expected a boolean, got "no"`."""
    text = str(error)
    at = _AT.search(text)
    message, path = (text[:at.start()], at[1]) if at else (text, "")
    if unknown := _UNKNOWN.match(message):
        where, _ = _where(path, document)
        return SettingsError(f"{source}: {where + ' ' if where else ''}unknown key {unknown[1]!r}".replace("  ", " "))
    where, value = _where(path, document)
    if expected := _EXPECTED.match(message):
        kind = _KINDS.get(expected[1].split(" | ")[0], expected[1].replace("`", ""))
        message = f"expected {kind}{expected[2]}, got {_describe(value)}"
    else:
        message = message[:1].lower() + message[1:]
    return SettingsError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: cannot read the config file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: invalid TOML: {error}") from None


def _organizations(config: ConfigFile, source: str) -> tuple:
    if config.organizations is None:
        return DEFAULT_ORGS
    for index, org in enumerate(config.organizations):
        try:   # the same checks as the admin API: one settings type
            validate_org_name(org.name)
            parsed = DomainOrgSettings.parse({k: v for k, v in org.as_command().items() if k != "password"})
            upstream = urlsplit(parsed.upstream)
            # The operator's own orgs may reach internal networks, never link-local or metadata addresses.
            if refusal := OPERATOR.host_refusal(upstream.scheme, upstream.hostname or ""):
                raise InvalidOrgSettings(f"upstream: refused: {refusal}", "upstream")
        except InvalidOrgSettings as error:
            raise SettingsError(f"{source}: [[organizations]] {index} ({org.name}) {error}") from None
    names = [org.name for org in config.organizations]
    if len(set(names)) != len(names):
        raise SettingsError(f"{source}: organization names must be unique")
    defaults = [org.name for org in config.organizations if org.default]
    if len(defaults) > 1:   # root paths must mean one org; the admin API refuses a second default too
        raise SettingsError(f"{source}: only one organization may be the default, got {', '.join(defaults)}")
    return config.organizations


def load_settings(path: str | None = None, *, host: str | None = None, port: int | None = None,
                  data_dir: str | None = None) -> Settings:
    """Read `path` (or $ENTREPOT_CONFIG); flags and ENTREPOT_* variables override the file; no file means the defaults."""
    path = path or os.environ.get("ENTREPOT_CONFIG") or None
    source = path or "<defaults>"
    document = _read(path) if path else {}
    try:
        config = msgspec.convert(document, ConfigFile, strict=True)
    except msgspec.ValidationError as error:
        raise config_error(source, error, document) from None
    server = config.server
    if server.engine not in ENGINES:
        raise SettingsError(f"{source}: [server] engine must be one of {', '.join(ENGINES)}, got {server.engine!r}")
    if config.storage.backend == "s3" and not config.storage.bucket:
        raise SettingsError(f"{source}: [storage] backend 's3' needs a bucket")
    if config.storage.accel_redirect and config.storage.backend != "filesystem":
        # S3 has no local file for nginx to send: `redirect = true` hands warm blobs to the object store instead.
        raise SettingsError(f"{source}: [storage] accel_redirect needs backend 'filesystem' (with s3, use redirect = true)")
    if config.storage.low_free_bytes < config.storage.min_free_bytes:   # `low` is the warning before `full`
        raise SettingsError(f"{source}: [storage] low_free_bytes ({config.storage.low_free_bytes}) must be at least "
                            f"min_free_bytes ({config.storage.min_free_bytes})")
    for address in server.trusted_proxies:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SettingsError(f"{source}: [server] trusted_proxies: {address!r} is not an IP address") from None
    try:
        parse_networks(config.security.allowed_upstream_networks)
    except ValueError as error:
        raise SettingsError(f"{source}: [security] allowed_upstream_networks: {error}") from None
    try:
        egress_proxy(config.upstream.proxy, config.upstream.no_proxy, os.environ)
    except ValueError as error:
        raise SettingsError(f"{source}: {error}") from None
    if 0 < config.audit.seal_interval_seconds < 1:   # a seal is an event: not many per second
        raise SettingsError(f"{source}: [audit] seal_interval_seconds must be 0 (off) or at least 1, "
                            f"got {config.audit.seal_interval_seconds}")
    if port is not None and not 0 <= port < 65536:
        raise SettingsError(f"--port: must be between 0 (any free port) and 65535, got {port}")
    return Settings(
        host=host or server.host,
        port=server.port if port is None else port,
        data_dir=data_dir or server.data_dir,
        secret_key=os.environ.get("ENTREPOT_SECRET_KEY") or server.secret_key,
        organizations=_organizations(config, source),
        config_file=path or "",
        log_level=server.log_level,
        admin_token=os.environ.get("ENTREPOT_ADMIN_TOKEN") or server.admin_token,
        engine=server.engine,
        database=config.database,
        storage=config.storage,
        redis=config.redis,
        upstream=config.upstream,
        security=config.security,
        pull_through=server.pull_through,
        analytics=config.analytics,
        audit=config.audit,
        trusted_proxies=server.trusted_proxies,
    )
