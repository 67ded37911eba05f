"""What bench.scale measures on a running server: sizes, start-up, memory, warm pulls, the admin API."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg

from bench.images import BenchImage, Pusher, push_image
from bench.measure import wrk
from bench.memory import PeakMemory, _status_kib, _tree
from bench.targets import ORG, DockerRegistry
from tests.support.server import EntrepotServer

EVENT_TABLES = {"registry_events", "pulls_events", "registry_snapshots", "credentials_events", "access_events"}


def sqlite_sizes(data_dir: Path) -> dict:
    """Bytes on disk per SQLite file (with its WAL): the event stores in the data directory, views under views/."""
    def sizes(directory: Path) -> dict[str, int]:
        return {path.name: sum(p.stat().st_size for p in directory.glob(path.name + "*"))
                for path in sorted(directory.glob("*.db"))}
    stores, views = sizes(data_dir), sizes(data_dir / "views")
    return {"files": {**stores, **{f"views/{name}": n for name, n in views.items()}},
            "event_store_bytes": sum(stores.values()), "views_bytes": sum(views.values())}


def postgres_sizes(url: str, schema: str = "entrepot") -> dict:
    """Bytes per table (indexes and TOAST included): event stores apart from views."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 2 DESC",
                            (schema,)).fetchall()
    tables = {name: size for name, size in rows}
    return {"tables": tables, "event_store_bytes": sum(n for t, n in tables.items() if t in EVENT_TABLES),
            "views_bytes": sum(n for t, n in tables.items() if t not in EVENT_TABLES)}


def rss_mib(pid: int) -> float:
    return round(sum(_status_kib(p, "VmRSS") for p in _tree(pid)) / 1024, 1)


def start_until_ready(server: EntrepotServer, timeout: float = 600, accept: tuple[str, ...] = ("ready",)) -> float:
    """Seconds from launching `entrepot serve` to /readyz answering 200 "ready" (or another `accept`ed status)."""
    started = time.perf_counter()
    server.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{server.url}/readyz", timeout=5)
            if answer.status_code == 200 and answer.json().get("status") in accept:
                return round(time.perf_counter() - started, 2)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.url}/readyz not ready after {timeout}s")


def settle_idle_rss(pid: int, seconds: float = 5.0) -> float:
    time.sleep(seconds)
    return rss_mib(pid)


def warm_image_upstream(stack: ExitStack, prefix: str) -> tuple[Path, DockerRegistry, BenchImage]:
    """A work directory, a distribution registry in it, and the small image every warm measurement pulls
    (five 64 KiB layers) pushed there; all of it closed with `stack`."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    upstream = stack.enter_context(DockerRegistry(work / "upstream", work / "storage", access_log=False))
    pusher = Pusher(upstream.url)
    stack.callback(pusher.close)
    return work, upstream, push_image(pusher, work, "library/small", "1.0", [64 * 1024] * 5)


def warm_pulls(servers: dict[str, EntrepotServer], repository: str, tag: str, digest: str, seconds: float,
               rounds: int, connections: int = 32) -> dict:
    """wrk by tag and by digest on a warm image (pulled once first, so both are hits), the servers taking
    turns round after round (a loaded machine drifts: alternating shares the drift); medians per server."""
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    samples: dict = {name: {"by_tag": [], "by_digest": []} for name in servers}
    for server in servers.values():
        for reference in (tag, digest):
            httpx.get(f"{server.url}/v2/{ORG}/{repository}/manifests/{reference}", headers=accept,
                      timeout=30).raise_for_status()
    for number in range(rounds):
        order = list(servers.items())
        for name, server in order[number % 2:] + order[:number % 2]:
            base = f"{server.url}/v2/{ORG}/{repository}/manifests/"
            for key, reference in (("by_tag", tag), ("by_digest", digest)):
                samples[name][key].append({**wrk(base + reference, seconds, connections), "load": os.getloadavg()[0]})
    return {name: {key: {"rps": statistics.median(s["rps"] for s in runs),
                         "p50_ms": statistics.median(s["p50_ms"] for s in runs),
                         "p99_ms": statistics.median(s["p99_ms"] for s in runs), "runs": runs}
                   for key, runs in kinds.items()} for name, kinds in samples.items()}


def many_clients(server: EntrepotServer, repository: str, tag: str, clients: int, seconds: float) -> dict:
    """`clients` connections pulling the warm manifest by tag at once: errors, p99 and peak RSS."""
    url = f"{server.url}/v2/{ORG}/{repository}/manifests/{tag}"
    with PeakMemory(server.process.pid) as memory:
        result = wrk(url, seconds, connections=clients)
    return {**result, "clients": clients, "peak_rss_mib": round(memory.peak_mib, 1)}


def timed_get(http: httpx.Client, path: str, params: dict | None = None, repeat: int = 30) -> dict:
    """p50/p99 (ms) of a GET, and the size of its answer."""
    samples, size = [], 0
    http.get(path, params=params).raise_for_status()   # warm: caches, prepared statements
    for _ in range(repeat):
        t = time.perf_counter()
        answer = http.get(path, params=params)
        samples.append((time.perf_counter() - t) * 1000)
        answer.raise_for_status()
        size = len(answer.content)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2), "bytes": size}


def deep_cursor(http: httpx.Client, path: str, pages: int, params: dict | None = None) -> str | None:
    """The cursor of page `pages` + 1, followed page by page as a client would."""
    cursor = None
    for _ in range(pages):
        answer = http.get(path, params={**(params or {}), **({"cursor": cursor} if cursor else {})}).json()
        cursor = answer.get("next_cursor")
        if cursor is None:
            break
    return cursor


def export_rate(http: httpx.Client, fmt: str, rows: int, params: dict | None = None) -> dict:
    started, lines = time.perf_counter(), 0
    with http.stream("GET", "/api/v1/audit", params={**(params or {}), "format": fmt, "limit": rows}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            lines += bool(line)
    seconds = time.perf_counter() - started
    lines -= fmt == "csv"   # the header
    return {"rows": lines, "seconds": round(seconds, 2), "rows_per_s": round(lines / seconds)}


def admin_api(server: EntrepotServer, token: str, org: str, sample: dict) -> dict:
    """The admin API and audit queries a user runs on a large history: p50/p99 of each."""
    out: dict = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        out["org show (summary)"] = timed_get(http, f"/api/v1/organizations/{org}")
        for kind in ("tags", "blobs"):
            path = f"/api/v1/organizations/{org}/{kind}"
            out[f"org {kind}, first page"] = timed_get(http, path, {"limit": 100})
            cursor = deep_cursor(http, path, 50, {"limit": 100})
            if cursor:
                out[f"org {kind}, page 51"] = timed_get(http, path, {"limit": 100, "cursor": cursor})
        out["org list"] = timed_get(http, "/api/v1/organizations")
        out["metrics scrape (/metrics)"] = timed_get(http, "/metrics", repeat=10)   # read-model totals: ttl 5 s
        out["readiness (/readyz)"] = timed_get(http, "/readyz")
        audit = "/api/v1/audit"
        out["audit, first page"] = timed_get(http, audit, {"limit": 100})
        filters = {"org": org, "repository": sample["repository"], "result": "stale", "client": sample["client"],
                   "actor": sample["actor"], "user_agent": "cri-o", "since": "30d"}
        for name, value in filters.items():
            out[f"audit by {name}, first page"] = timed_get(http, audit, {name: value, "limit": 100}, repeat=10)
        # A value no pull has: before their indexes (client, actor) and the view's list of distinct agents
        # (user_agent), each of these pages walked the whole log to learn it is empty.
        for name, value in (("client", "10.255.255.254"), ("actor", "nobody+ci"), ("user_agent", "no-such-agent/0")):
            out[f"audit by {name} no pull has, first page"] = timed_get(http, audit, {name: value, "limit": 100},
                                                                        repeat=3)
        out["audit by org+result+since, first page"] = timed_get(
            http, audit, {"org": org, "result": "miss", "since": "7d", "limit": 100}, repeat=10)
        middle = str(sample["middle_cursor"])
        out["audit, deep page (middle of the log)"] = timed_get(http, audit, {"limit": 100, "cursor": middle})
        out["audit by org, deep page (middle of the log)"] = timed_get(
            http, audit, {"org": org, "limit": 100, "cursor": middle}, repeat=10)
        out["export jsonl"] = export_rate(http, "jsonl", 100_000)
        out["export csv"] = export_rate(http, "csv", 100_000)
        out["export jsonl by org"] = export_rate(http, "jsonl", 50_000, {"org": org})
    return out
