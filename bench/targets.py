"""The processes under test: upstream registries, the distribution proxy peer, Entrepôt (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.registry import UpstreamRegistry
from tests.support.server import REPO_ROOT, EntrepotServer
from tests.support.processes import stop_process

ORG = "bench"
# combined log format: ... "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 1048576 "" "curl/7.88.1"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-) ')


class DockerRegistry(UpstreamRegistry):
    """docker-registry with a storage root that may be shared: one process takes the pushes, others
    read the same files, each with its own access log, so every target's upstream traffic is counted
    apart. `proxy` makes it the distribution pull-through peer."""

    port_from_log = False   # it logs at level error: no "listening on" line to read a port 0 from

    def __init__(self, directory: Path, storage: Path, access_log: bool, proxy: str | None = None) -> None:
        self.storage, self.access_log, self.proxy = storage, access_log, proxy
        super().__init__(directory)

    def _write_config(self) -> None:
        proxy = f"proxy:\n  remoteurl: {self.proxy}\n" if self.proxy else ""
        self.config_path.write_text(
            "version: 0.1\n"
            # level error: the info line per request would cost the registry as much as the request
            f"log:\n  level: error\n  accesslog:\n    disabled: {'false' if self.access_log else 'true'}\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: entrepot-bench-secret\n" + proxy)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class AccessLog:
    """Bytes a registry sent since a mark, from its combined-format access log."""

    def __init__(self, registry: DockerRegistry) -> None:
        self.path = registry.log_path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def settle(self, quiet: float = 0.5, timeout: float = 60.0) -> None:
        """Wait until the log stops growing: the peer keeps fetching in the background after its clients."""
        deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.path.stat().st_size
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def sent(self) -> dict:
        """GET traffic since the mark: bytes, blob GETs, manifest GETs, HEADs."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        out = {"bytes": 0, "blob_gets": 0, "manifest_gets": 0, "heads": 0}
        for match in _ACCESS.finditer(text):
            if match["method"] == "HEAD":
                out["heads"] += 1
            elif match["method"] == "GET" and match["bytes"] != "-":
                out["bytes"] += int(match["bytes"])
                out["blob_gets"] += "/blobs/" in match["uri"]
                out["manifest_gets"] += "/manifests/" in match["uri"]
        return out


@dataclass
class Target:
    """One server clients pull from: `prefix` goes before the repository in every path."""

    name: str
    url: str
    prefix: str = ""
    pid: int | None = None
    upstream: AccessLog | None = None   # the registry it fetches from (None: it is the upstream)
    notes: list[str] = field(default_factory=list)

    def manifest_url(self, repository: str, reference: str) -> str:
        return f"{self.url}/v2/{self.prefix}{repository}/manifests/{reference}"

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.url}/v2/{self.prefix}{repository}/blobs/{digest}"

    def image_ref(self, repository: str, tag: str) -> str:
        return f"{self.url.removeprefix('http://')}/{self.prefix}{repository}:{tag}"


def entrepot_server(directory: Path, upstream_url: str, database_url: str | None = None,
                    engine: str = "granian", accel_redirect: str = "") -> EntrepotServer:
    org = {"name": ORG, "upstream": upstream_url,
           # generous staleness: a warm pull by tag is a hit, never a revalidation
           "staleness_seconds": 86_400, "max_stale_seconds": 7 * 86_400}
    # PostgreSQL as deployed (infra/deploy/): projections in their own process, not in the API's.
    sections = ({"database": {"url": database_url, "schema": "entrepot", "run_projections": False}}
                if database_url else {})
    server: dict = {"engine": engine}
    if accel_redirect:   # nginx in front sends the published blobs (infra/deploy/nginx), as deployed
        sections["storage"] = {"accel_redirect": accel_redirect}
        server["trusted_proxies"] = ["127.0.0.1"]
    return EntrepotServer(directory, [org], startup_timeout=90.0, sections=sections, server=server)


@contextmanager
def projection_runner(server: EntrepotServer) -> Iterator[subprocess.Popen]:
    """`entrepot projections run` beside a PostgreSQL server, as the production shape runs it."""
    with open(server.directory / "projections.log", "ab") as log:
        process = subprocess.Popen(server.command("projections", "run"), cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server._env())
    try:
        yield process
    finally:
        stop_process(process, grace=10)


def database_url_supported() -> bool:
    """Whether this checkout's settings know `[database] url` (the server may still ignore it)."""
    from infra.settings import DatabaseSettings
    return "url" in DatabaseSettings.__struct_fields__   # a msgspec Struct since the settings became one type
