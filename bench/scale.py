"""How Entrepôt's costs grow with a large site's history, on SQLite and PostgreSQL, next to an empty store.

    .venv/bin/python -m bench.scale [--pulls 10000000] [--images 200000] [--orgs 36] [--clients 300]
        [--backend both|sqlite|postgres] [--data /var/tmp/entrepot-scale] [--wrk-seconds 10]
        [--many-clients 1000] [--rounds 3] [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--label NAME]

1. Build (once; cached and resumable in --data, and on PostgreSQL in a database named after the shape):
   orgs, images with shared base layers, tag moves and Zipf-popular pulls from a few hundred clients,
   written through the applications' own write path (bench/scale_history.py), then every view built
   by one rebuild pass (each view's writing time, and the pass's wall time).
2. Measure against that store, and the same on an empty store of the same backend started in the same run:
   sizes on disk, `entrepot serve` to /readyz, idle RSS, warm manifest by tag and by digest (wrk),
   the admin API and the audit queries (p50/p99, first and deep pages, exports' rows/s), and
   `--many-clients` connections pulling a warm image at once (errors, p99, peak RSS).
Writes bench/results/<date>-scale-<label>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from bench.postgres import chosen_backends, fresh_database_url
from bench.scale_history import Progress, Shape, org_name, write_history
from bench.scale_measure import (admin_api, many_clients, postgres_sizes, settle_idle_rss, sqlite_sizes,
                                 start_until_ready, warm_image_upstream, warm_pulls)
from bench.scale_report import markdown
from bench.targets import entrepot_server, projection_runner
from infra.persistence import event_store_env
from infra.projection_runtime import rebuild_many
from infra.settings import load_settings
from projections import PROJECTION_NAMES

RESULTS = Path(__file__).resolve().parent / "results"
AS_BUILT = False   # set by --as-built


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


def persistent_database(admin_url: str, name: str) -> str:
    """The shape's own database, created once and kept: the next run reuses the history built into it."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def build(directory: Path, upstream_url: str, database_url: str | None, shape: Shape, token: str,
          events_only: bool = False) -> dict:
    """The history and its views, written once; what this call wrote and how fast. `events_only`: stop
    once the events are written (the views are built by the next run, e.g. with newer projection code)."""
    server = entrepot_server(directory, upstream_url, database_url)
    server.server["admin_token"] = token
    server.write_config()
    progress = Progress(directory / "progress.json", shape)
    if not progress.state.get("initialised"):
        server.start()      # the server creates its data directory, key and schema as a user's first start would
        server.stop()
        progress.save(initialised=True)
    if progress.state.get("views"):
        return progress.state["build"]
    env = event_store_env(load_settings(str(server.config_path)))
    # The server's 5 s bound on a transaction left idle is for requests; this writer on a loaded machine
    # can be descheduled that long mid-batch (it was, at load 12), and then loses the batch for nothing.
    env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] = "120"
    say(f"writing the history into {directory} ({shape})")
    figures = write_history(env, shape, progress, say)
    if events_only:
        say("events written; the views are left for the next run")
        return {"write": figures}
    # One pass over each application's log for every view (as `entrepot projections rebuild all` does):
    # a page is read and decoded once. Each view's seconds are its own writing time; the pass's wall
    # time, reading and decoding included, is kept beside them.
    spent: dict[str, float] = {}
    started = time.perf_counter()
    replayed = rebuild_many(PROJECTION_NAMES, env, seconds=spent)
    views = {"one pass (wall, reading and decoding included)": _figures(
        _events_read(replayed), time.perf_counter() - started)}
    for name in PROJECTION_NAMES:
        views[name] = _figures(sum(replayed[name].values()), spent[name])
        say(f"  rebuilt {name}: {views[name]['events']:,} events, {views[name]['seconds']} s of writes")
    progress.save(views=True, build={"write": figures, "rebuild": views, "load": os.getloadavg()})
    return progress.state["build"]


def _events_read(replayed: dict[str, dict[str, int]]) -> int:
    """Events the pass read: each application's log once, however many views follow it."""
    apps = {app for counts in replayed.values() for app in counts}
    return sum(max(counts.get(app, 0) for counts in replayed.values()) for app in apps)


def _figures(events: int, seconds: float) -> dict:
    return {"events": events, "seconds": round(seconds, 1), "events_per_s": round(events / max(seconds, 1e-9))}


def started(directory: Path, upstream_url: str, database_url: str | None, token: str, stack: ExitStack) -> tuple:
    """`entrepot serve` on a store (and, on PostgreSQL, its projections process, as deployed); seconds to ready."""
    server = entrepot_server(directory, upstream_url, database_url)
    server.server["admin_token"] = token
    server.startup_timeout = 900
    server.write_config()
    stack.callback(server.stop)
    ready_s = start_until_ready(server, accept=("ready", "degraded") if AS_BUILT else ("ready",))
    if database_url:
        stack.enter_context(projection_runner(server))
    return server, ready_s


def run_backend(backend: str, args, shape: Shape, upstream_url: str, image, stack: ExitStack) -> dict:
    token = "scale-" + secrets.token_hex(8)
    tag = f"{shape.orgs}o-{shape.images}i-{shape.pulls}p"
    directory = Path(args.data) / f"{backend}-{tag}"
    database_url = empty_url = None
    if backend == "postgres":
        database_url = persistent_database(args.postgres_url, f"{args.database_prefix}_{tag.replace('-', '_')}")
        empty_url = fresh_database_url(args.postgres_url, stack)
    if args.as_built:   # measure the store as far as it got (a view may still be catching up: say so)
        built = Progress(directory / "progress.json", shape).state.get("build") or {"write": {}, "rebuild": {}}
    else:
        built = build(directory, upstream_url, database_url, shape, token)
    empty_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-scale-empty-")))
    stores = {"large": (directory, database_url), "empty": (empty_dir, empty_url)}
    out: dict = {name: {} for name in stores}
    with ExitStack() as first:   # untimed: a first start after an upgrade may add indexes to the views
        started(directory, upstream_url, database_url, token, first)
    servers = {}
    with ExitStack() as running:
        for name, (where, url) in stores.items():   # one after the other: each start is timed alone
            servers[name], ready_s = started(where, upstream_url, url, token, running)
            out[name]["serve_to_ready_s"] = ready_s
            out[name]["load_at_start"] = os.getloadavg()
            out[name]["idle_rss_mib"] = settle_idle_rss(servers[name].process.pid)
            out[name]["sizes"] = postgres_sizes(url) if url else sqlite_sizes(servers[name].data_dir)
            say(f"{backend} {name}: ready in {ready_s} s, idle RSS {out[name]['idle_rss_mib']} MiB")
        warm = warm_pulls(servers, image.repository, image.tag, image.manifest_digest, args.wrk_seconds, args.rounds)
        for name in stores:
            out[name]["warm"] = warm[name]
            say(f"{backend} {name}: warm by tag {warm[name]['by_tag']['rps']:.0f} req/s, "
                f"by digest {warm[name]['by_digest']['rps']:.0f} (medians of {args.rounds})")
        sample = {"repository": "apps/service0", "client": "10.0.0.7", "actor": f"{org_name(0)}+ci",
                  "middle_cursor": args.pulls // 2}
        out["large"]["admin"] = admin_api(servers["large"], token, org_name(0), sample)
        say(f"{backend}: admin API measured")
        for name, server in servers.items():
            out[name]["many_clients"] = many_clients(server, image.repository, image.tag, args.many_clients,
                                                     args.wrk_seconds)
            say(f"{backend} {name}: {args.many_clients} clients: {out[name]['many_clients']['errors']} errors, "
                f"p99 {out[name]['many_clients']['p99_ms']:.1f} ms, peak RSS {out[name]['many_clients']['peak_rss_mib']} MiB")
            out[name]["load_at_end"] = os.getloadavg()
    ratios = {key: round(out["large"]["warm"][key]["rps"] / out["empty"]["warm"][key]["rps"], 2)
              for key in ("by_tag", "by_digest")}
    return {"backend": backend, "build": built, **out, "warm_ratio": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=10_000_000)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--orgs", type=int, default=36)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgres"), default="both")
    parser.add_argument("--data", default="/var/tmp/entrepot-scale", help="where built histories are kept")
    parser.add_argument("--wrk-seconds", type=float, default=10)
    parser.add_argument("--many-clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="warm wrk runs per store, taking turns")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database-prefix", default="entrepot_scale",
                        help="PostgreSQL: the large store's database is <prefix>_<shape>, kept for the next run")
    parser.add_argument("--build-only", action="store_true", help="build (or finish building) the histories only")
    parser.add_argument("--events-only", action="store_true",
                        help="with --build-only: write (or finish writing) the histories' events, not the views")
    parser.add_argument("--as-built", action="store_true",
                        help="measure the store as far as its build got, a view still catching up (readiness: "
                             "degraded accepted)")
    parser.add_argument("--label", default="", help="results file name: <date>-scale[-label].json")
    args = parser.parse_args()
    # A stopped run (kill, a supervisor) still stops the registry and servers it started, via the ExitStack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    global AS_BUILT
    AS_BUILT = args.as_built
    shape = Shape(orgs=args.orgs, images=args.images, pulls=args.pulls, clients=args.clients)
    backends = chosen_backends(args, say)
    load_before = os.getloadavg()
    results = []
    with ExitStack() as stack:
        _, upstream, image = warm_image_upstream(stack, "entrepot-scale-")
        for backend in backends:
            if args.build_only:
                token = "scale-build"
                tag = f"{shape.orgs}o-{shape.images}i-{shape.pulls}p"
                url = (persistent_database(args.postgres_url, f"{args.database_prefix}_{tag.replace('-', '_')}")
                       if backend == "postgres" else None)
                build(Path(args.data) / f"{backend}-{tag}", upstream.url, url, shape, token, args.events_only)
                continue
            results.append(run_backend(backend, args, shape, upstream.url, image, stack))
    if args.build_only:
        return
    document = {"benchmark": "bench.scale", "shape": asdict(shape), "as_built": args.as_built, "scaled_down": shape.pulls < 10_000_000,
                "cores": os.cpu_count(), "machine": platform.node(), "python": platform.python_version(),
                "load_before": load_before, "load_after": os.getloadavg(), "results": results}
    stem = f"{datetime.now(UTC):%Y-%m-%d}-scale" + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(document))
    say(f"wrote bench/results/{stem}.json and .md")


if __name__ == "__main__":
    main()
