"""Analytics query latency as history grows: summary, series and top over 30 days, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.analytics [--pulls 1000000] [--days 60] [--orgs 4] [--backend both|sqlite|postgres]
        [--queries 200] [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--json bench/results/<f>.json]

`--pulls` Pull events spread evenly over `--days` days (and a TrafficReport per org every 10 minutes) go
through the analytics view's own write path (view.process, pages of 500, as its runner writes them).
Then each query is asked `--queries` times for the last 30 days (since and until off minute
boundaries, so every rollup grain is read) and its p50/p99 reported. Target (issue 13): p99 < 50 ms
with 10M pulls; a smaller --pulls is a scaled-down run, and the JSON says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from eventsourcing.persistence import Tracking

from application.analytics import Analytics
from bench.postgres import add_backend_arguments, chosen_backends, fresh_env
from domain.pull import Pull
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport
from infra.projection_runtime import open_view

TARGET_MS = 50.0
DAY = 86400
RESULTS = ("hit", "hit", "hit", "hit", "miss", "revalidated", "stale")
REPORT_EVERY = 600   # one traffic report per org every 10 minutes (a server writes one per 5 s of traffic)
CLIENTS = 200        # distinct client addresses: a fleet of CI runners and nodes


def events(pulls: int, days: int, orgs: int, end: float):
    """Pull and traffic events in time order, over `days` days up to `end`."""
    start = end - days * DAY
    step = days * DAY / pulls
    next_report = start + REPORT_EVERY
    fills = [0] * (len(FILL_SECONDS_BUCKETS) + 1)
    fills[3] = 1
    for n in range(pulls):
        at = start + n * step
        while next_report <= at:
            for o in range(orgs):
                yield from TrafficReport(org=f"org{o}", process="bench:1", since=next_report - REPORT_EVERY,
                                         until=next_report,
                                         bytes_served={"blob": 5_000_000}, bytes_fetched={"blob": 1_000_000},
                                         blob_pulls={"hit": 9, "miss": 1}, fills=1, fill_seconds=fills,
                                         fills_failed=0, repositories={f"library/image{n % 500}": 5_000_000}
                                         ).collect_events()
            next_report += REPORT_EVERY
        yield from Pull(org=f"org{n % orgs}", repository=f"library/image{n % 500}", reference=f"v{n % 7}",
                        digest="sha256:x", result=RESULTS[n % len(RESULTS)], client=f"10.0.{n % CLIENTS // 250}.{n % CLIENTS % 250}",
                        user_agent="containerd/2.0", at=at).collect_events()


def fill(view, args: argparse.Namespace, end: float) -> tuple[int, float]:
    started, page, position = time.perf_counter(), [], 0
    for event in events(args.pulls, args.days, args.orgs, end):
        position += 1
        page.append((event, Tracking("Pulls", position)))
        if len(page) == 500:
            view.process(page)
            page = []
    view.process(page)
    return position, time.perf_counter() - started


def timed(call, queries: int) -> dict:
    """Wall-clock p50/p99, and the median CPU time of this process (on SQLite the database's work too;
    not PostgreSQL's): on a loaded machine the wall clock also counts the wait for a core."""
    call()   # warm: prepared statements, page cache
    samples, cpu = [], []
    for _ in range(queries):
        t, c = time.perf_counter(), time.process_time()
        call()
        samples.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(p99, 2),
            "cpu_p50_ms": round(statistics.median(cpu), 2), "verdict": "PASS" if p99 < TARGET_MS else "MISS"}


def run_backend(backend: str, args: argparse.Namespace, stack: ExitStack) -> list[dict]:
    env = fresh_env(backend, args.postgres_url, stack,
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-bench-")))
    view = open_view("analytics", env)
    stack.callback(view.close)
    end = time.time() // 60 * 60 - 7   # off a minute boundary
    count, seconds = fill(view, args, end)
    print(f"{backend}: {count} events into the analytics view in {seconds:.1f} s ({count / seconds:,.0f}/s)",
          flush=True)
    rows = query_latencies(view, backend, [f"org{o}" for o in range(args.orgs)], end, args.queries)
    rows.append({"backend": backend, "events": count, "fill_seconds": round(seconds, 1)})
    return rows


def query_latencies(view, backend: str, orgs: list[str], end: float, queries: int) -> list[dict]:
    """p50/p99 of each analytics query over the last 30 days of `end`, on the first org (bench.scale reuses it)."""
    analytics = Analytics(view, lambda: orgs, lambda: end)
    rng = random.Random(1)
    since = lambda: end - 30 * DAY - rng.randrange(3600)   # noqa: E731 - a fresh odd start per query
    calls = {
        "summary one org, 30 days": lambda: analytics.summary(orgs[0], since(), end),
        "summary every org, 30 days": lambda: analytics.summary(None, since(), end),
        "series hourly, 30 days": lambda: analytics.series(orgs[0], "hit_ratio", "hour", since(), end),
        "top 10, 30 days": lambda: analytics.top(orgs[0], "pulls", since(), end, 10),
    }
    rows = []
    for name, call in calls.items():
        row = {"backend": backend, "query": name, **timed(call, queries)}
        print(f"  {name:28} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  (CPU p50 {row['cpu_p50_ms']:.2f} ms)"
              f"  {row['verdict']} (< {TARGET_MS:g} ms)", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    add_backend_arguments(parser)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    backends = chosen_backends(args)
    load_before = os.getloadavg()
    rows = []
    with ExitStack() as stack:
        for backend in backends:
            rows.extend(run_backend(backend, args, stack))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "bench.analytics", "pulls": args.pulls, "days": args.days, "orgs": args.orgs,
            "scaled_down": args.pulls < 10_000_000, "target_p99_ms": TARGET_MS, "cores": os.cpu_count(),
            "machine": platform.node(), "python": platform.python_version(), "load_before": load_before,
            "load_after": os.getloadavg(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
