"""`python -m bench.outage`: how Entrepôt on PostgreSQL behaves while its database refuses connections.

Starts an upstream registry and `entrepot serve` on a fresh PostgreSQL database (loopback only),
warms one image, then for each round blocks the database (`ALTER DATABASE ... ALLOW_CONNECTIONS
false` and every backend of it terminated) for `--outage-seconds` while one client asks for
uncached manifests in a loop and another polls /healthz; then unblocks it and polls an uncached
pull until it succeeds. It reports:

- fail-fast time: how long an uncached pull takes to fail during the outage (and its status);
- recovery time: from unblocking until an uncached pull succeeds again, and until /readyz's
  event_store is ok;
- /healthz latency during the outage.

Bounded: about rounds x (outage + 10) seconds. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import psycopg

from bench.machine import load, machine, versions
from bench.postgres import FreshDatabase
from tests.support.images import build_image, push_image
from tests.support.registry import UpstreamRegistry
from tests.support.server import EntrepotServer

RESULTS = Path(__file__).with_name("results")
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
REPOSITORY = "library/outage"


def _allow(database: FreshDatabase, allowed: bool) -> None:
    with psycopg.connect(database.admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (database.name,))


def _timed(call) -> tuple[float, int | str]:
    started = time.monotonic()
    try:
        status: int | str = call().status_code
    except httpx.HTTPError as error:
        status = type(error).__name__
    return time.monotonic() - started, status


class ColdTags:
    """Tags pushed upstream but never pulled: each pull of one is a miss that needs the database."""

    def __init__(self, count: int) -> None:
        self._next, self.count = 0, count

    def take(self) -> str:
        if self._next >= self.count:
            raise RuntimeError("out of cold tags: raise --tags")
        self._next += 1
        return f"cold{self._next - 1}"


def one_round(server: EntrepotServer, database: FreshDatabase, tags: ColdTags, outage: float,
              client_timeout: float) -> dict:
    health: list[float] = []
    stop = threading.Event()

    def liveness() -> None:
        with httpx.Client(base_url=server.url, timeout=client_timeout) as probe:
            while not stop.is_set():
                took, status = _timed(lambda: probe.get("/healthz"))
                health.append(took if status == 200 else float("inf"))
                time.sleep(0.05)

    with httpx.Client(base_url=server.url, timeout=client_timeout) as client:
        def pull() -> httpx.Response:
            return client.get(f"/v2/hub/{REPOSITORY}/manifests/{tags.take()}", headers={"Accept": ACCEPT})
        failures: list[tuple[float, int | str]] = []
        _allow(database, False)
        prober = threading.Thread(target=liveness, daemon=True)
        prober.start()
        try:
            ends = time.monotonic() + outage
            while time.monotonic() < ends:
                failures.append(_timed(pull))
        finally:
            _allow(database, True)
        unblocked = time.monotonic()
        pull_back = ready_back = None
        while time.monotonic() - unblocked < 60 and (pull_back is None or ready_back is None):
            if pull_back is None and _timed(pull)[1] == 200:
                pull_back = time.monotonic() - unblocked
            if ready_back is None:
                try:
                    if client.get("/readyz").json().get("event_store") == "ok":
                        ready_back = time.monotonic() - unblocked
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.05)
        stop.set()
        prober.join(client_timeout + 1)
    times = [took for took, _ in failures]
    statuses: dict[str, int] = {}
    for _, status in failures:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"pulls_during_outage": len(failures), "statuses": statuses,
            "fail_fast_seconds": {"median": statistics.median(times), "max": max(times)} if times else None,
            "recovery_seconds": {"pull": pull_back, "readyz_event_store": ready_back},
            "healthz_seconds": {"count": len(health), "max": max(health) if health else None,
                                "median": statistics.median(health) if health else None}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--outage-seconds", type=float, default=10)
    p.add_argument("--client-timeout", type=float, default=30, help="a pull that takes longer counts as hung")
    p.add_argument("--tags", type=int, default=400)
    p.add_argument("--output", type=Path, help=f"default: {RESULTS}/<date>-<host>-outage.json")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="entrepot-outage-"))
    database = FreshDatabase(args.admin_url).create()
    upstream = UpstreamRegistry(work / "upstream").start()
    server = None
    try:
        image = build_image("outage", layers=1, layer_size=4096)
        for tag in ("warm", *(f"cold{n}" for n in range(args.tags))):
            push_image(upstream.url, REPOSITORY, tag, image)
        server = EntrepotServer(work / "entrepot", [{"name": "hub", "upstream": upstream.url}],
                                sections={"database": {"url": database.url, "schema": "entrepot"}}).start()
        assert httpx.get(f"{server.url}/v2/hub/{REPOSITORY}/manifests/warm", headers={"Accept": ACCEPT},
                         timeout=30).status_code == 200
        load_before = load()
        tags = ColdTags(args.tags)
        rounds = []
        for n in range(args.rounds):
            rounds.append(one_round(server, database, tags, args.outage_seconds, args.client_timeout))
            print(f"round {n + 1}: {json.dumps(rounds[-1])}", flush=True)
            time.sleep(2)
    finally:
        if server is not None:
            server.stop()
        upstream.stop()
        database.drop()

    def median_of(pick) -> float | None:
        values = [v for v in (pick(r) for r in rounds) if v is not None]
        return statistics.median(values) if values else None
    summary = {
        "fail_fast_median_seconds": median_of(lambda r: r["fail_fast_seconds"] and r["fail_fast_seconds"]["median"]),
        "fail_fast_max_seconds": max((r["fail_fast_seconds"]["max"] for r in rounds if r["fail_fast_seconds"]),
                                     default=None),
        "recovery_pull_median_seconds": median_of(lambda r: r["recovery_seconds"]["pull"]),
        "recovery_readyz_median_seconds": median_of(lambda r: r["recovery_seconds"]["readyz_event_store"]),
        "healthz_max_seconds": max((r["healthz_seconds"]["max"] for r in rounds if r["healthz_seconds"]["max"]),
                                   default=None),
    }
    result = {"date": date.today().isoformat(), "machine": machine(), "load_before": load_before,
              "load_after": load(), "versions": versions("none"), "parameters": vars(args) | {"output": None},
              "rounds": rounds, "summary": summary}
    output = args.output or RESULTS / f"{date.today().isoformat()}-{machine()['host']}-outage.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
