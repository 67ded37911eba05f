"""`python -m bench.rebuild`: how fast `entrepot projections rebuild` replays N pull events into the views.

    .venv/bin/python -m bench.rebuild [--pulls 1000000] [--images 1000] [--backend both|sqlite|postgres]
        [--projection audit ...] [--page-size 500] [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--results bench/results/<date>-rebuild.json] [--profile DIR] [--compare-mapper]
        [--bulk-events 100000] [--compare-page-by-page] [--store-dir DIR] [--store-database NAME] [--write-only]

Writes the CacheRecords events of `--images` cached images, then `--pulls` pulls of them, through the
application's own write path in batches of 1,000 (Pulls.write, as the group commit does), into a fresh
store per backend (SQLite in a temporary directory; PostgreSQL in a database created and dropped here).
Then rebuilds the views that follow Pulls with the runtime's functions (infra/projection_runtime/rebuild.py:
in place on SQLite, blue/green on PostgreSQL): first all of them in one pass (`rebuild_many`, as
`entrepot projections rebuild --all` does: each page read and decoded once), with each view's writing
time; then each view alone (`rebuild`, as `entrepot projections rebuild NAME`). Reports events/s (wall
clock, and this process's CPU seconds: PostgreSQL's own work is not in them) with the load average.
The target (issue 14): 30,000 events/s, on both backends. `--profile DIR` writes pyinstrument HTML
profiles there (pyinstrument must be installed: pip install pyinstrument). `--compare-mapper` first
runs the one pass with every event decoded by eventsourcing's mapper (the peer of the fast pull decoder,
infra/projection_runtime/decoding.py), in the same run, and reports the ratio. The rebuilds are bulk
loads (`--bulk-events`, rebuild.REBUILD_BULK_EVENTS; 0: page by page); `--compare-page-by-page` first
runs the one pass page by page with the indexes kept (the peer of the bulk mode) in the same run.
`--store-dir`/`--store-database` keep the store for the next run (a 1M write takes minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from application.cache_records import CacheRecords
from application.pulls import Pulls
from bench import machine
from bench.postgres import add_backend_arguments, chosen_backends, fresh_env
from domain.pull import Pull
from infra.projection_runtime import replay as replay_module
from infra.projection_runtime import second_process
from infra.projection_runtime.second_process import spare_core
from infra.projection_runtime.rebuild import (REBUILD_BULK_EVENTS, REBUILD_CHILD_EVENTS, REBUILD_CHILD_LOAD,
                                              REBUILD_PAGE_SIZE, rebuild_many)
from projections import PROJECTION_NAMES
from projections.catalog import spec

TARGET = 30_000
CACHE_KIB = 0   # --cache-kib: SQLite page cache per view during the rebuilds (0: SQLite's default)
RESULTS_DIR = Path(__file__).with_name("results")
RESULTS = ("hit", "hit", "hit", "hit", "miss", "revalidated", "stale")
PULL_VIEWS = tuple(name for name in PROJECTION_NAMES if "Pulls" in spec(name).applications)


def write_events(env: dict, pulls_count: int, images: int, batch: int = 1000) -> dict[str, int]:
    """`images` cached images (manifest, 5 layers, a tag), then `pulls_count` pulls of them; the apps' heads."""
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        records.apply_org("hub", {"upstream": "docker.io"})
        digests = []
        for i in range(images):
            digest = f"sha256:{i:064x}"
            layers = [f"sha256:{i:032x}{j:032x}" for j in range(5)]
            records.record_manifest("hub", f"library/image{i}", digest, "application/vnd.oci.image.manifest.v1+json",
                                    900, layers, [], 1.0, tag="latest", sizes={layer: 1000 for layer in layers})
            for layer in layers:
                records.record_blob("hub", f"library/image{i}", layer, 1000, 2.0)
            digests.append(digest)
        for start in range(0, pulls_count, batch):
            pulls.write([Pull.recorded("hub", f"library/image{n % images}", "latest", digests[n % images],
                                       RESULTS[n % len(RESULTS)], f"10.0.{n % 7}.{n % 250}", "containerd/2.0",
                                       10.0 + n, actor="anonymous")
                         for n in range(start, min(start + batch, pulls_count))])
        return {"Registry": records.recorder.max_notification_id() or 0,
                "Pulls": pulls.recorder.max_notification_id() or 0}
    finally:
        records.close()
        pulls.close()


def profiled(call, profile: Path | None):
    """call(), under pyinstrument when `profile` names the HTML file to write."""
    if profile is None:
        return call()
    from pyinstrument import Profiler   # optional: only for --profile
    profiler = Profiler(interval=0.005)
    profiler.start()
    try:
        return call()
    finally:
        profiler.stop()
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(profiler.output_html())


@contextmanager
def mapper_decoding():
    """Within it, replays decode every event with the mapper (the baseline of the fast pull decoder)."""
    fast = replay_module.decoder_of
    replay_module.decoder_of = lambda app: app.mapper.to_domain_event
    try:
        yield
    finally:
        replay_module.decoder_of = fast


@contextmanager
def not_gathering(names: list[str]):
    """The named views with no `gathers` while it lasts: they write page by page, each page with their live
    runner's statements (`process_page`), while the other views gather: the peer of a view's gathering."""
    classes = [cls for name in names for cls in (spec(name).sqlite_view, spec(name).postgres_view)]
    own = {cls: cls.__dict__.get("gathers") for cls in classes}   # None: inherited
    for cls in classes:
        cls.gathers = ()
    try:
        yield
    finally:
        for cls, gathers in own.items():
            if gathers is None:
                del cls.gathers
            else:
                cls.gathers = gathers


def rate(events: int, seconds: float) -> int | None:
    return round(events / seconds) if seconds else None


def children_cpu() -> float:
    """CPU seconds of this process's ended children (a rebuild's second process, once joined)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_pass(names: list[str], env: dict, page_size: int, profile: Path | None,
             bulk_events: int = REBUILD_BULK_EVENTS, child_events: int | None = REBUILD_CHILD_EVENTS) -> dict:
    """Every view in one pass (rebuild_many: each page read and decoded once), with each view's writing time.
    `child_events` None: every view in this process (the peer of the second process)."""
    seconds: dict[str, float] = {}
    started, cpu, child_cpu = time.perf_counter(), time.process_time(), children_cpu()
    # The split pass starts its second process whatever the load (child_load None): rebuild_many's default
    # would not on a machine with no core to spare (REBUILD_CHILD_LOAD), which is recorded with the pass.
    would_split = spare_core(REBUILD_CHILD_LOAD)
    replayed = profiled(lambda: rebuild_many(tuple(names), env, page_size, seconds, cache_kib=CACHE_KIB,
                                             bulk_events=bulk_events, child_events=child_events, child_load=None,
                                             child_on_postgres=True),
                        profile)
    together = {"seconds": round(time.perf_counter() - started, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
                "child_cpu_seconds": round(children_cpu() - child_cpu, 2),
                "view_write_seconds": {name: round(value, 2) for name, value in seconds.items()},
                "replayed": replayed, "load": machine.load(), "bulk_events": bulk_events,
                "child_events": child_events, "default_would_split": would_split}
    # Views write in threads of their own (infra/projection_runtime/bulk.py), overlapping each other and the
    # reading: the pass takes at least its slowest view's writes; the rest is reading, decoding and waiting.
    together["slowest_view_writes_seconds"] = round(max(seconds.values(), default=0.0), 2)
    return together


def timed_rebuilds(names: list[str], env: dict, page_size: int, profile_dir: Path | None, backend: str,
                   each_alone: bool = True, compare_mapper: bool = False, bulk_events: int = REBUILD_BULK_EVENTS,
                   compare_page_by_page: bool = False, not_gathering_views: list[str] | None = None,
                   compare_one_process: bool = False, rounds: int = 1) -> dict:
    """Every view in one pass (first with the mapper's decoding when `compare_mapper`, or page by page when
    `compare_page_by_page`, or with `not_gathering_views` writing page by page), then each view alone."""
    baseline = None
    if compare_mapper:
        with mapper_decoding():
            baseline = one_pass(names, env, page_size, profile_dir and profile_dir / f"rebuild-{backend}-all-mapper.html",
                                bulk_events)
    paged = None
    if compare_page_by_page:
        paged = one_pass(names, env, page_size, profile_dir and profile_dir / f"rebuild-{backend}-all-paged.html", 0)
    ungathered = None
    if not_gathering_views:
        with not_gathering(not_gathering_views):
            ungathered = one_pass(names, env, page_size,
                                  profile_dir and profile_dir / f"rebuild-{backend}-all-not-gathering.html", bulk_events)
        ungathered["not_gathering"] = list(not_gathering_views)
    together, one_process, passes = None, None, []
    for round_ in range(rounds):
        # The second process's peer (every view here) in the same run, first in odd rounds, last in even ones.
        order = ("one_process", "split") if round_ % 2 == 0 else ("split", "one_process")
        for kind in order if compare_one_process else ("split",):
            profile = profile_dir and profile_dir / f"rebuild-{backend}-all{'-one-process' if kind == 'one_process' else ''}.html"
            if kind == "one_process":
                one_process = one_pass(names, env, page_size, profile, bulk_events, None)
                passes.append({"kind": kind, "round": round_ + 1, **one_process})
            else:
                together = one_pass(names, env, page_size, profile, bulk_events)
                passes.append({"kind": kind, "round": round_ + 1, **together})
            print(f"  round {round_ + 1} {kind}: {passes[-1]['seconds']} s (CPU {passes[-1]['cpu_seconds']} s here, "
                  f"{passes[-1]['child_cpu_seconds']} s in the child; load {passes[-1]['load']})", flush=True)
    alone = []
    for name in names if each_alone else ():
        started, cpu = time.perf_counter(), time.process_time()
        counts = profiled(lambda: rebuild_many((name,), env, page_size, bulk_events=bulk_events)[name], profile_dir and profile_dir / f"rebuild-{backend}-{name}.html")
        took = time.perf_counter() - started
        events = sum(counts.values())
        alone.append({"projection": name, "replayed": counts, "events": events, "seconds": round(took, 2),
                      "cpu_seconds": round(time.process_time() - cpu, 2), "events_per_s": rate(events, took),
                      "verdict": "PASS" if took and events / took >= TARGET else "MISS", "load": machine.load()})
    return {"together": together, "alone": alone, "mapper_decoding": baseline, "page_by_page": paged,
            "not_gathering": ungathered, "one_process": one_process, "passes": passes}


def kept_env(backend: str, store: str, admin_url: str) -> dict:
    """The store named by --store, kept between runs: a SQLite directory, or a PostgreSQL database name."""
    from infra.persistence import embedded_env, postgres_env, prepare_database

    if backend == "sqlite":
        return embedded_env(Path(store))
    env = postgres_env(f"{admin_url.rsplit('/', 1)[0]}/{store}", "bench")
    prepare_database(env)
    return env


def store_heads(env: dict) -> dict[str, int]:
    """The Registry and Pulls heads of a store (0 for an empty one)."""
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        return {"Registry": records.recorder.max_notification_id() or 0,
                "Pulls": pulls.recorder.max_notification_id() or 0}
    finally:
        records.close()
        pulls.close()


def report_peer(label: str, peer: dict | None, pulls: int) -> None:
    """Print a peer pass of the same run (none: nothing), with its rate added to it."""
    if peer:
        peer["pull_events_per_s"] = rate(pulls, peer["seconds"])
        print(f"  one pass, {label}: {peer['seconds']} s ({peer['pull_events_per_s']} pull events/s; process CPU "
              f"{peer['cpu_seconds']} s; slowest view's writes {peer['slowest_view_writes_seconds']} s; writes "
              f"{peer['view_write_seconds']}; load {peer['load']})", flush=True)


def report_ratio(label: str, peer: dict | None, together: dict) -> None:
    """Print how much faster the measured pass was than its peer (none: nothing)."""
    if peer:
        print(f"  {label}: {peer['seconds'] / together['seconds']:.2f}x wall, "
              f"{peer['cpu_seconds'] / together['cpu_seconds']:.2f}x process CPU", flush=True)


def median_passes(passes: list[dict], pulls: int) -> dict[str, dict]:
    """Per kind of pass (split, one_process): the median wall and CPU seconds over the rounds, and each load."""
    out = {}
    for kind in ("split", "one_process"):
        mine = [p for p in passes if p["kind"] == kind]
        if mine:
            seconds = statistics.median(p["seconds"] for p in mine)
            out[kind] = {"rounds": len(mine), "seconds": round(seconds, 2), "pull_events_per_s": rate(pulls, seconds),
                         "cpu_seconds": round(statistics.median(p["cpu_seconds"] for p in mine), 2),
                         "child_cpu_seconds": round(statistics.median(p["child_cpu_seconds"] for p in mine), 2),
                         "loads": [p["load"][0] for p in mine]}
    return out


def run_backend(backend: str, args: argparse.Namespace, stack: ExitStack) -> dict:
    store = args.store_dir if backend == "sqlite" else args.store_database
    if store:
        # A store kept for later runs (a 1M write takes ~10 min): written only when empty.
        env = kept_env(backend, store, args.postgres_url)
        heads = store_heads(env)
    else:
        env = fresh_env(backend, args.postgres_url, stack,
                        stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-rebuild-")))
        heads = {"Pulls": 0}
    written = 0.0
    if heads["Pulls"] == 0:
        started = time.perf_counter()
        heads = write_events(env, args.pulls, args.images)
        written = time.perf_counter() - started
        print(f"{backend}: wrote {heads['Pulls']} pull and {heads['Registry']} cache-record events in {written:.1f} s "
              f"(load {machine.load()})", flush=True)
    else:
        print(f"{backend}: reusing the kept store {store}: {heads['Pulls']} pull and {heads['Registry']} "
              f"cache-record events", flush=True)
    if args.write_only:
        return {"backend": backend, "heads": heads, "write_seconds": round(written, 1)}
    names = list(args.projection or PULL_VIEWS)
    timed = timed_rebuilds(names, env, args.page_size, args.profile, backend, not args.no_alone, args.compare_mapper,
                           args.bulk_events, args.compare_page_by_page, args.compare_not_gathering,
                           args.compare_one_process, args.rounds)
    together = timed["together"]
    pulls = heads["Pulls"]
    paged, ungathered, baseline = timed["page_by_page"], timed["not_gathering"], timed["mapper_decoding"]
    report_peer("page by page (bulk_events 0, indexes kept)", paged, pulls)
    if ungathered:
        report_peer(f"{', '.join(ungathered['not_gathering'])} page by page, the rest gathered", ungathered, pulls)
    report_peer("every event decoded by the mapper", baseline, pulls)
    report_peer("every view in one process", timed["one_process"], pulls)
    medians = median_passes(timed["passes"], pulls)
    for kind, median in medians.items():
        print(f"  median of {median['rounds']} rounds, {kind}: {median['seconds']} s ({median['pull_events_per_s']} "
              f"pull events/s; CPU {median['cpu_seconds']} s here + {median['child_cpu_seconds']} s in the child; loads "
              f"{median['loads']})", flush=True)
    if len(medians) == 2:
        ratio = medians["one_process"]["seconds"] / medians["split"]["seconds"]
        print(f"  second process / one process (medians): {ratio:.2f}x wall", flush=True)
    print(f"  all of {', '.join(names)} in one pass (bulk_events {args.bulk_events}): {together['seconds']} s "
          f"({rate(pulls, together['seconds'])} pull events/s; {rate(pulls, together['cpu_seconds'])} per CPU second; "
          f"process CPU {together['cpu_seconds']} s; slowest view's writes {together['slowest_view_writes_seconds']}"
          f" s; load {machine.load()})", flush=True)
    report_ratio("bulk / page by page", paged, together)
    if ungathered:
        report_ratio(f"gathering / not gathering {', '.join(ungathered['not_gathering'])}", ungathered, together)
    report_ratio("fast pull decoder / mapper", baseline, together)
    for name, took in together["view_write_seconds"].items():
        print(f"    {name:10} writes {took:7.2f} s: {rate(pulls, took)} pull events/s", flush=True)
    for row in timed["alone"]:
        print(f"  {row['projection']:10} alone: {row['events']:8} events in {row['seconds']:7.2f} s: "
              f"{row['events_per_s']:7} events/s ({row['verdict']} >= {TARGET}; CPU {row['cpu_seconds']} s; "
              f"load {row['load']})", flush=True)
    return {"backend": backend, "heads": heads, "write_seconds": round(written, 1),
            "together": {**together, "pull_events_per_s": rate(pulls, together["seconds"])},
            "alone": timed["alone"], "mapper_decoding": baseline, "page_by_page": paged, "not_gathering": ungathered,
            "one_process": timed["one_process"], "passes": timed["passes"], "medians": medians}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__.splitlines()[0])
    p.add_argument("--pulls", type=int, default=1_000_000)
    p.add_argument("--images", type=int, default=1000)
    add_backend_arguments(p)
    p.add_argument("--projection", action="append", choices=PROJECTION_NAMES,
                   help=f"rebuild only this view (repeatable); default: those that follow Pulls ({', '.join(PULL_VIEWS)})")
    p.add_argument("--page-size", type=int, default=REBUILD_PAGE_SIZE)
    p.add_argument("--no-alone", action="store_true", help="only the one-pass rebuild of every view, not each alone")
    p.add_argument("--compare-mapper", action="store_true",
                   help="first run the one pass with every event decoded by the mapper (the fast decoder's peer)")
    p.add_argument("--bulk-events", type=int, default=REBUILD_BULK_EVENTS,
                   help=f"gather this many events per view write, indexes made at the end (default "
                        f"{REBUILD_BULK_EVENTS}; 0: page by page, indexes kept)")
    p.add_argument("--compare-page-by-page", action="store_true",
                   help="first run the one pass page by page (bulk_events 0), the bulk mode's peer, in the same run")
    p.add_argument("--compare-not-gathering", action="append", choices=PROJECTION_NAMES, metavar="NAME",
                   help="first run the one pass with this view (repeatable) writing page by page, as its live "
                        "runner does, and the others gathering: the peer of its gathering, in the same run")
    p.add_argument("--compare-one-process", action="store_true",
                   help="also run the one pass with every view in this process (no second process), the peer of "
                        "the split, in the same run (alternating with it over --rounds)")
    p.add_argument("--child-views", help="the views the rebuild's second process takes first, comma-separated "
                   f"(default: {','.join(second_process.CHILD_PREFERENCE)}; e.g. chain: no decoding in the child)")
    p.add_argument("--rounds", type=int, default=1, help="one passes per kind (alternating; medians reported)")
    p.add_argument("--profile", type=Path, help="write pyinstrument profiles of each rebuild into this directory")
    p.add_argument("--store-dir", help="SQLite: keep the store in this directory for later runs (written only "
                   "when empty, else reused: then --pulls and --images are what it holds)")
    p.add_argument("--store-database", help="PostgreSQL: keep the store in this database, as --store-dir")
    p.add_argument("--write-only", action="store_true", help="only write the events (into the kept store)")
    p.add_argument("--results", type=Path, help="the JSON file to write (default: bench/results/<date>-rebuild.json)")
    p.add_argument("--cache-kib", type=int, default=0,
                   help="SQLite page cache per view during the rebuilds, KiB (default 0: SQLite's own, 2 MiB)")
    args = p.parse_args()
    if args.child_views:
        second_process.CHILD_PREFERENCE = tuple(args.child_views.split(","))   # split() runs in this process
    global CACHE_KIB
    CACHE_KIB = args.cache_kib
    backends = chosen_backends(args)
    load_before = machine.load()
    with ExitStack() as stack:
        runs = [run_backend(backend, args, stack) for backend in backends]
    result = {"benchmark": "bench.rebuild", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine.machine(), "load_before": load_before, "load_after": machine.load(),
              "pulls": args.pulls, "images": args.images, "page_size": args.page_size, "target": TARGET,
              "cache_kib": args.cache_kib, "bulk_events": args.bulk_events,
              "child_views": list(second_process.CHILD_PREFERENCE),
              "runs": runs}
    out = args.results or RESULTS_DIR / f"{datetime.now(timezone.utc):%Y-%m-%d}-rebuild.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
