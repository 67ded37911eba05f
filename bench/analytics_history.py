"""Issue 13's figure: analytics queries on the analytics view of a 10M-pull history, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.analytics_history build --backend sqlite --dir /var/tmp/entrepot-ana13 [--pulls 10000000]
    .venv/bin/python -m bench.analytics_history build --backend postgres --database entrepot_ana13_10m
    .venv/bin/python -m bench.analytics_history query --backend sqlite --dir /var/tmp/entrepot-ana13 [--queries 300]
    .venv/bin/python -m bench.analytics_history vacuum --database entrepot_ana13_10m
    .venv/bin/python -m bench.analytics_history drop --database entrepot_ana13_10m

How the history is built: Pull.Recorded events made by `Pull.recorded` (the request path's own event
factory) and a TrafficReport.Recorded per org every 10 minutes, in time order, go through the view's own
`process()` in pages of `--page` events — the projection's code path, skipping only the event store (whose
write path runs at 1-2k events/s here, see bench.scale). The shape is a busy site's: `--orgs` orgs with
Zipf-popular orgs, `--images` images per org with Zipf-popular images (tags from a few versions), `--clients`
client addresses, results as bench.scale_history's mix, over `--days` days. The view's size depends on
orgs x buckets x members rather than on the pull count; the pulls are all really recorded anyway.
`build` writes `build.json` next to the store; `query` times the API's queries (bench.analytics.query_latencies)
over the last 30 days through the Analytics application. On PostgreSQL `build` ends with VACUUM ANALYZE
(timed apart; `vacuum` runs it alone): what autovacuum does to a view that has grown for weeks, which a
bulk build gives it no time for — without it PostgreSQL has no statistics and no visibility map, so no
index-only scans.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time
from pathlib import Path

import psycopg
from eventsourcing.persistence import Tracking
from psycopg import sql

from bench.analytics import query_latencies
from bench.scale_history import AGENTS, RESULTS
from domain.pull import Pull
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport
from infra.persistence import embedded_env, postgres_env, prepare_database
from infra.projection_runtime import open_view
from interfaces.serving import freeze_startup_heap

DAY = 86400
REPORT_EVERY = 600
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def zipf_cumulative(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1 / (i + 1) ** s for i in range(n)))


def org_name(o: int) -> str:
    return f"org{o:02d}"


def history(args: argparse.Namespace, end: float):
    """(event, tracking) in time order: `args.pulls` pulls and the traffic reports of every org."""
    rng = random.Random(13)
    start = end - args.days * DAY
    step = args.days * DAY / args.pulls
    orgs = zipf_cumulative(args.orgs, 0.8)
    images = zipf_cumulative(args.images, 1.1)
    results, weights = zip(*RESULTS)
    result_cum = list(itertools.accumulate(weights))
    clients = [f"10.{c // 65536}.{c // 256 % 256}.{c % 256}" for c in range(args.clients)]
    fills = [0] * (len(FILL_SECONDS_BUCKETS) + 1)
    fills[3] = 1
    next_report, position, chunk = start + REPORT_EVERY, 0, 100_000
    for first in range(0, args.pulls, chunk):
        k = min(chunk, args.pulls - first)
        org_of = rng.choices(range(args.orgs), cum_weights=orgs, k=k)
        image_of = rng.choices(range(args.images), cum_weights=images, k=k)
        result_of = rng.choices(results, cum_weights=result_cum, k=k)
        for i in range(k):
            at = start + (first + i) * step
            while next_report <= at:
                for o in range(args.orgs):
                    position += 1
                    report = TrafficReport(org=org_name(o), process="bench:1", since=next_report - REPORT_EVERY,
                                           until=next_report, bytes_served={"blob": 5_000_000},
                                           bytes_fetched={"blob": 1_000_000}, blob_pulls={"hit": 9, "miss": 1},
                                           fills=1, fill_seconds=fills, fills_failed=0,
                                           repositories={f"app/image{rng.randrange(50)}": 5_000_000})
                    for event in report.collect_events():
                        yield event, Tracking("Pulls", position)
                next_report += REPORT_EVERY
            image = image_of[i]
            client = clients[(image * 7 + rng.randrange(args.clients)) % args.clients]
            position += 1
            yield Pull.recorded(org=org_name(org_of[i]), repository=f"app/image{image}", reference=f"v{image % 5}",
                                digest="sha256:" + f"{image:064x}", result=result_of[i], client=client,
                                user_agent=AGENTS[image % len(AGENTS)], at=at), Tracking("Pulls", position)


def open_store(args: argparse.Namespace, create: bool):
    if args.backend == "sqlite":
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        return embedded_env(args.dir)
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + args.database
    if create:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
    env = postgres_env(url, "bench")
    prepare_database(env)
    return env


def where(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.backend == "sqlite" else Path(f"/var/tmp/{args.database}")


def build(args: argparse.Namespace) -> None:
    env = open_store(args, create=True)
    view = open_view("analytics", env)
    end = time.time() // 60 * 60 - 7   # off a minute boundary
    load_before, started, page, count, pulls = os.getloadavg(), time.perf_counter(), [], 0, 0
    try:
        for event, tracking in history(args, end):
            page.append((event, tracking))
            if len(page) == args.page:
                view.process(page)
                count += len(page)
                page = []
                if count % (args.page * 20) == 0:
                    print(f"  {count:,} events, {time.perf_counter() - started:.0f} s", flush=True)
        view.process(page)
        count += len(page)
    finally:
        view.close()
    seconds = time.perf_counter() - started
    vacuumed = vacuum(args) if args.backend == "postgres" else None
    document = {"backend": args.backend, "end": end, "events": count, "pulls": args.pulls, "days": args.days,
                "orgs": args.orgs, "images_per_org": args.images, "clients": args.clients, "page": args.page,
                "seconds": round(seconds, 1), "events_per_s": round(count / seconds), "vacuum_analyze_seconds": vacuumed,
                "load_before": load_before,
                "load_after": os.getloadavg()}
    where(args).mkdir(parents=True, exist_ok=True)
    (where(args) / "build.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document), flush=True)


def query(args: argparse.Namespace) -> None:
    built = json.loads((where(args) / "build.json").read_text())
    view = open_view("analytics", open_store(args, create=False))
    if not args.no_freeze:
        # As `entrepot serve` does once started (interfaces/serving.py): start-up's heap is set aside from the
        # garbage collector, whose full collections otherwise visit it and make the p99 (measured: every-org
        # summary p99 78 ms with, 26 ms without collections on a quiet machine; p50 the same).
        freeze_startup_heap()
    load_before = os.getloadavg()
    try:
        rows = query_latencies(view, args.backend, [org_name(o) for o in range(built["orgs"])], built["end"],
                               args.queries)
    finally:
        view.close()
    document = {"benchmark": "bench.analytics_history", "build": built, "queries": args.queries,
                "startup_heap_frozen": not args.no_freeze,
                "load_before": load_before, "load_after": os.getloadavg(), "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


def vacuum(args: argparse.Namespace) -> float:
    started = time.perf_counter()
    with psycopg.connect(ADMIN_URL.rsplit("/", 1)[0] + "/" + args.database, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    seconds = round(time.perf_counter() - started, 1)
    print(f"VACUUM ANALYZE: {seconds} s", flush=True)
    return seconds


def drop(args: argparse.Namespace) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "query", "vacuum", "drop"))
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--dir", default="/var/tmp/entrepot-ana13")
    parser.add_argument("--database", default="entrepot_ana13_10m")
    parser.add_argument("--pulls", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--orgs", type=int, default=36)
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--page", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json")
    parser.add_argument("--no-freeze", action="store_true",
                        help="query: leave start-up's heap to the garbage collector (the server freezes it)")
    args = parser.parse_args()
    {"build": build, "query": query, "vacuum": vacuum, "drop": drop}[args.command](args)


if __name__ == "__main__":
    main()
