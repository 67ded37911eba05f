"""Settings from a TOML file (stdlib tomllib), with command-line overrides; nothing reads them globally."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields

DEFAULT_PORT = 5000
ENGINES = ("uvicorn", "granian")
DEFAULT_ENGINE = "granian"


class SettingsError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class OrgSettings:
    name: str
    upstream: str
    namespace: str = ""
    staleness_seconds: int = 300
    max_stale_seconds: int = 7 * 24 * 3600
    negative_cache_seconds: int = 30
    on_upstream_denied: str = "serve-stale"   # or "refuse"
    rate_limit_floor: int = 0                 # serve stale instead of spending the last upstream pulls
    username: str = ""
    password: str = ""
    default: bool = False

    def as_command(self) -> dict:
        """The settings an org is registered with (everything but its name)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


DEFAULT_ORGS = (OrgSettings(name="hub", upstream="docker.io"),)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""                     # postgresql://...; empty: embedded SQLite under data_dir
    schema: str = "entrepot"          # PostgreSQL schema for event tables and views; created if missing
    run_projections: bool = True      # PostgreSQL: serve runs the projections (one runner each across processes)


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "filesystem"       # or "s3"
    bucket: str = ""
    endpoint_url: str = ""            # empty: AWS; credentials from the standard AWS environment
    region: str = "us-east-1"
    prefix: str = ""                  # key prefix inside the bucket
    redirect: bool = False            # True: 307 to presigned URLs for warm blobs


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 5.0        # seconds to connect to an upstream
    read_timeout: float = 30.0          # seconds a response may stall between two chunks
    failures_before_backoff: int = 3    # failed requests in the window before an upstream goes into back-off
    backoff_failure_ratio: float = 0.5  # ... if they are at least this share of the requests sent in the window
    backoff_repositories: int = 2       # ... and failed for at least this many distinct repositories
    backoff_window_seconds: float = 30.0  # the sliding window those are counted in
    backoff_seconds: float = 15.0       # how long it is then treated as unavailable


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""                     # empty: in-process coordination only
    key_prefix: str = "entrepot:"     # every key Entrepôt writes starts with this
    fill_wait_seconds: float = 60.0   # how long a replica waits for another's fill before fetching itself
    tag_cache_seconds: float = 5.0    # life of a tag lookup shared by replicas


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = "entrepot-data"
    secret_key: str = ""              # AES key for upstream credentials; generated under data_dir when empty
    organizations: tuple[OrgSettings, ...] = DEFAULT_ORGS
    log_level: str = "info"
    admin_token: str = ""             # admin API token ($ENTREPOT_ADMIN_TOKEN); generated when empty
    engine: str = DEFAULT_ENGINE      # the HTTP server: "granian" (sends warm blobs by pathsend) or "uvicorn"
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)


def _section(document: dict, name: str, allowed: set[str], source: str) -> dict:
    section = document.get(name, {})
    if not isinstance(section, dict):
        raise SettingsError(f"{source}: [{name}] must be a table")
    unknown = set(section) - allowed
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    return section


def _org(entry: object, index: int, source: str) -> OrgSettings:
    if not isinstance(entry, dict):
        raise SettingsError(f"{source}: [[organizations]] entry {index} must be a table")
    allowed = {f.name for f in fields(OrgSettings)}
    unknown = set(entry) - allowed
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) in organization {index}: {', '.join(sorted(unknown))}")
    for required in ("name", "upstream"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise SettingsError(f"{source}: organization {index} needs a string '{required}'")
    return OrgSettings(**entry)


def load_settings(path: str | None = None, *, host: str | None = None, port: int | None = None,
                  data_dir: str | None = None) -> Settings:
    """Read `path` (or $ENTREPOT_CONFIG); flags override the file; no file means the defaults."""
    path = path or os.environ.get("ENTREPOT_CONFIG") or None
    document: dict = {}
    source = path or "<defaults>"
    if path:
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{path}: invalid TOML: {error}") from None
    server = _section(document, "server",
                      {"host", "port", "data_dir", "secret_key", "log_level", "admin_token", "engine"}, source)
    database = DatabaseSettings(**_section(document, "database", {f.name for f in fields(DatabaseSettings)}, source))
    storage = StorageSettings(**_section(document, "storage", {f.name for f in fields(StorageSettings)}, source))
    redis = RedisSettings(**_section(document, "redis", {f.name for f in fields(RedisSettings)}, source))
    upstream = UpstreamSettings(**_section(document, "upstream", {f.name for f in fields(UpstreamSettings)}, source))
    if server.get("engine", DEFAULT_ENGINE) not in ENGINES:
        raise SettingsError(f"{source}: [server] engine must be one of {', '.join(ENGINES)}, got {server['engine']!r}")
    if storage.backend not in ("filesystem", "s3"):
        raise SettingsError(f"{source}: [storage] backend must be 'filesystem' or 's3', got {storage.backend!r}")
    if not isinstance(database.run_projections, bool) or not isinstance(database.schema, str) or not database.schema:
        raise SettingsError(f"{source}: [database] run_projections must be true or false and schema a non-empty string")
    if storage.backend == "s3" and not storage.bucket:
        raise SettingsError(f"{source}: [storage] backend 's3' needs a bucket")
    unknown = set(document) - {"server", "organizations", "database", "storage", "redis", "upstream"}
    if unknown:
        raise SettingsError(f"{source}: unknown section(s): {', '.join(sorted(unknown))}")
    orgs = document.get("organizations")
    if orgs is None:
        organizations = DEFAULT_ORGS
    elif not isinstance(orgs, list):
        raise SettingsError(f"{source}: organizations must be an array of tables ([[organizations]])")
    else:
        organizations = tuple(_org(entry, i, source) for i, entry in enumerate(orgs))
    names = [org.name for org in organizations]
    if len(set(names)) != len(names):
        raise SettingsError(f"{source}: organization names must be unique")
    defaults = [org.name for org in organizations if org.default]
    if len(defaults) > 1:   # root paths must mean one org; the admin API refuses a second default too
        raise SettingsError(f"{source}: only one organization may be the default, got {', '.join(defaults)}")
    settings = Settings(
        host=host or server.get("host", "127.0.0.1"),
        port=int(port or server.get("port", DEFAULT_PORT)),
        data_dir=data_dir or server.get("data_dir", "entrepot-data"),
        secret_key=os.environ.get("ENTREPOT_SECRET_KEY") or server.get("secret_key", ""),
        organizations=organizations,
        log_level=server.get("log_level", "info"),
        admin_token=os.environ.get("ENTREPOT_ADMIN_TOKEN") or server.get("admin_token", ""),
        engine=server.get("engine", DEFAULT_ENGINE),
        database=database,
        storage=storage,
        redis=redis,
        upstream=upstream,
    )
    if not 0 < settings.port < 65536:
        raise SettingsError(f"{source}: port must be between 1 and 65535")
    return settings
