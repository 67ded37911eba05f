"""`python -m bench.scale_rebuild`: how fast a large scale store's views rebuild (issue 16), per view.

    .venv/bin/python -m bench.scale_rebuild --data /var/tmp/entrepot-scale/sqlite-36o-200000i-1000000p
        [--database postgresql://postgres@127.0.0.1:5432/entrepot_scale_36o_200000i_1000000p]
        [--view retention ...] [--all] [--checkout DIR ...] [--rounds 1] [--label NAME] [--keep]

Takes a store bench.scale wrote (`--build-only --events-only` leaves its views empty) and rebuilds its
views with the runtime's own functions: all of them in one pass (`--all`: rebuild_many, as
`entrepot projections rebuild --all`), and each `--view` alone. The store's events are never changed:
on SQLite the views are written into a fresh directory per rebuild (the event files are only read); on
PostgreSQL each rebuild runs in a copy of `--database` (CREATE DATABASE ... TEMPLATE), dropped after, so
every rebuild starts from the same events and no view left by an earlier one.

`--checkout DIR` (repeatable): run each rebuild with the code of that checkout (a git worktree or
`git archive` of another commit), in a child process, taking turns round after round: a same-run
before/after. Default: this checkout only. Reports, per rebuild, events/s (wall), the child's CPU
seconds (PostgreSQL's own work is not in them), each view's writing seconds within a pass, the
load average and a host probe (HostProbe: how fast the host ran Python meanwhile); writes
bench/results/<date>-scale-rebuild[-label].{json,md}, again after every pass (a run stopped early keeps
what it measured). `--keep` (PostgreSQL): the last round's copy of each checkout stays, as the database
`<prefix>_<checkout>`, to read its views afterwards (`bench.audit_pages`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from bench import machine

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parents[1]

# Run in the child, from the checkout measured (its own infra/ and projections/): one rebuild, as JSON.
CHILD = r"""
import json, os, resource, sys, time
from infra.persistence import event_store_env, embedded_env
from infra.settings import load_settings
from infra.projection_runtime.rebuild import rebuild_many
from projections import PROJECTION_NAMES
config, views_dir, database, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
settings = load_settings(config)
if database:
    import dataclasses, msgspec
    settings = dataclasses.replace(settings, database=msgspec.structs.replace(settings.database, url=database))
env = event_store_env(settings)
env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"] = "600"
if not database:
    for name in PROJECTION_NAMES:
        env[f"{name.upper()}_SQLITE_DBNAME"] = os.path.join(views_dir, f"{name}.db")
names = tuple(PROJECTION_NAMES) if names == ["all"] else tuple(names)
spent = {}
load = os.getloadavg()
cpu, wall = time.process_time(), time.perf_counter()
replayed = rebuild_many(names, env, seconds=spent)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"replayed": replayed, "seconds": spent, "wall": wall, "cpu": cpu,
                  "child_cpu": children.ru_utime + children.ru_stime,
                  # Peak resident memory (KiB on Linux) of the rebuilding process and of its largest child.
                  "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "child_max_rss_mib": round(children.ru_maxrss / 1024),
                  "load_before": load, "load_after": os.getloadavg()}))
"""


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


def events_read(replayed: dict[str, dict[str, int]]) -> int:
    """Events the pass read: each application's log once, however many views follow it."""
    apps = {app for counts in replayed.values() for app in counts}
    return sum(max(counts.get(app, 0) for counts in replayed.values()) for app in apps)


def database_copy(url: str, name: str) -> str:
    """A copy of the store's database (its events, no connection may be open on it); its URL."""
    admin = url.rsplit("/", 1)[0] + "/postgres"
    source = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source)))
    return url.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    admin, name = url.rsplit("/", 1)[0] + "/postgres", url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rename_database(url: str, name: str) -> None:
    admin, old = url.rsplit("/", 1)[0] + "/postgres", url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(name)))


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (user, nice, system; /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(value) for value in fields[:3]) / os.sysconf("SC_CLK_TCK")


def wal_bytes(url: str | None) -> int | None:
    """The bytes PostgreSQL has written to its WAL (pg_stat_wal, cluster-wide); None on SQLite."""
    if not url:
        return None
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        return int(conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0])


PROBE_EVERY = 10.0    # seconds between host probes while a pass runs
PROBE_LOOP = 1_000_000  # additions per probe: ~20-40 ms of a core (0.2-0.4 % of one, every 10 s)


def probe_ms() -> float:
    """This thread's CPU milliseconds for a fixed Python loop: how fast the host runs Python just now. A
    shared host has slow spells that no /proc/stat column shows (no steal): session 21 saw the same code's
    passes take 442.7, 452.3 and 627.1 s within an hour, each needing more CPU seconds for the same work. CPU
    time, not wall time: a loop that waits for a busy core costs no more of it."""
    started, total = time.thread_time(), 0
    for i in range(PROBE_LOOP):
        total += i
    return (time.thread_time() - started) * 1000


class HostProbe:
    """`probe_ms` every PROBE_EVERY seconds in a thread while a pass runs (this process only waits for the
    pass's own); `median()` of them. Comparable within a run: a checkout whose probes are slower ran on a
    slower host."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY):
            self.samples.append(probe_ms())

    def __enter__(self) -> HostProbe:
        self.samples.append(probe_ms())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(probe_ms())

    def median(self) -> float:
        return round(statistics.median(self.samples), 2)


def settle(below: float = 1.0, longest: float = 240.0) -> None:
    """Wait (at most `longest` seconds) for the 1-minute load to fall below `below`: the rebuild starts its
    second process only with a core to spare (rebuild.REBUILD_CHILD_LOAD), and the load a pass leaves behind
    would otherwise keep the next checkout's pass in one process, unlike the first's."""
    deadline = time.monotonic() + longest
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


def one_rebuild(checkout: Path, config: Path, database: str | None, names: list[str], prefix: str,
                keep_as: str | None = None) -> dict:
    """One rebuild of `names` (["all"]: every view in one pass) with `checkout`'s code, from the same events.
    Besides the child's own figures: the whole machine's CPU seconds meanwhile (the rebuild's processes and
    PostgreSQL's, with whatever else ran) and, on PostgreSQL, the WAL it wrote. `keep_as`: the name the
    rebuilt database keeps (replacing any of that name) instead of being dropped."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-views-", dir="/var/tmp") as views_dir:
        url = database_copy(database, f"{prefix}_rebuild") if database else ""
        done = None
        try:
            wal, cpu = wal_bytes(url), machine_cpu_seconds()
            with HostProbe() as probe:
                done = subprocess.run([sys.executable, "-c", CHILD, str(config), views_dir, url, ",".join(names)],
                                      cwd=checkout, capture_output=True, text=True)
            cpu, wal_after = machine_cpu_seconds() - cpu, wal_bytes(url)
        finally:
            if url and keep_as and done is not None and done.returncode == 0:
                drop_database(url.rsplit("/", 1)[0] + "/" + keep_as)
                rename_database(url, keep_as)
            elif url:
                drop_database(url)
    if done.returncode:
        raise RuntimeError(f"rebuild {names} with {checkout} failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["machine_cpu"] = round(cpu, 1)
    out["host_probe_ms"] = probe.median()
    out["wal_mib"] = None if wal is None else round((wal_after - wal) / 2**20, 1)
    events = events_read(out["replayed"])
    out["events"] = events
    out["events_per_s"] = round(events / out["wall"])
    out["views"] = {name: {"events": sum(counts.values()), "write_s": round(out["seconds"].get(name, 0.0), 1),
                           "events_per_write_s": round(sum(counts.values()) / max(out["seconds"].get(name, 0.0), 1e-9))}
                    for name, counts in out["replayed"].items()}
    return out


def _median_of(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return f"{statistics.median(values):,.1f}" if values else "-"


def markdown(document: dict) -> str:
    lines = [f"# Scale rebuild: {document['store']}", "",
             f"{document['started']} to {document['ended']}, {document['machine']['cores']} cores, "
             f"load before {document['load_before']}, after {document['load_after']}. Medians over "
             f"{document['rounds']} round(s), checkouts taking turns.", "",
             "| rebuild | checkout | events | wall s | events/s | CPU s | machine CPU s | WAL MiB | peak RSS MiB (child)"
             "| load (1 min) at start | host probe ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for what, by_checkout in document["results"].items():
        for label, runs in by_checkout.items():
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] + r["child_cpu"] for r in runs)
            loads = ", ".join(f"{r['load_before'][0]:.1f}" for r in runs)
            machine_cpu = _median_of(runs, "machine_cpu")
            wal = _median_of(runs, "wal_mib")
            rss = (f"{max(r['max_rss_mib'] for r in runs):,} ({max(r['child_max_rss_mib'] for r in runs):,})"
                   if all("max_rss_mib" in r for r in runs) else "-")
            lines.append(f"| {what} | {label} | {runs[0]['events']:,} | {wall:.1f} | {runs[0]['events'] / wall:,.0f} | "
                         f"{cpu:.1f} | {machine_cpu} | {wal} | {rss} | {loads} | {_median_of(runs, 'host_probe_ms')} |")
    lines += ["", f"Host probe: the median CPU milliseconds of a fixed Python loop ({PROBE_LOOP:,} additions) "
              f"sampled every {PROBE_EVERY:.0f} s during the pass, in the benchmark's own idle process. A checkout "
              "whose probe is slower ran on a slower host: compare its wall time with that in mind."]
    ratios = document.get("ratios")
    if ratios:
        lines += ["", "Speed ratio (events/s of each checkout over the first's, medians):", ""]
        lines += [f"- {what}: " + ", ".join(f"{label} {ratio:.2f}x" for label, ratio in by.items())
                  for what, by in ratios.items()]
    lines += ["", "Each view's writing seconds within a pass (the reading and decoding are shared):", "",
              "| rebuild | checkout | view | events | write s | events/write s |", "|---|---|---|---:|---:|---:|"]
    for what, by_checkout in document["results"].items():
        for label, runs in by_checkout.items():
            for view, figures in runs[0]["views"].items():
                lines.append(f"| {what} | {label} | {view} | {figures['events']:,} | {figures['write_s']} | "
                             f"{figures['events_per_write_s']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the store's directory (bench.scale's, with entrepot.toml)")
    parser.add_argument("--database", default="", help="PostgreSQL: the store's database URL (copied per rebuild)")
    parser.add_argument("--view", action="append", default=[], help="rebuild this view alone (repeatable)")
    parser.add_argument("--all", action="store_true", help="rebuild every view in one pass (default without --view)")
    parser.add_argument("--checkout", action="append", default=[], help="code to measure (default: this one)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--label", default="")
    parser.add_argument("--prefix", default="scalebuild16", help="names of the temporary databases and directories")
    parser.add_argument("--keep", action="store_true",
                        help="PostgreSQL: keep each checkout's last rebuilt copy as the database <prefix>_<checkout>")
    args = parser.parse_args()
    store = Path(args.data).resolve()
    config = store / "entrepot.toml"
    checkouts = [Path(c).resolve() for c in args.checkout] or [HERE]
    labels = [c.name for c in checkouts]
    rebuilds = ([["all"]] if args.all or not args.view else []) + [[view] for view in args.view]
    started, load_before = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", machine.load()
    results: dict[str, dict[str, list]] = {",".join(r): {label: [] for label in labels} for r in rebuilds}
    for round_number in range(args.rounds):
        for names in rebuilds:
            # Alternate which checkout goes first, round after round.
            order = list(zip(checkouts, labels))
            if round_number % 2:
                order.reverse()
            for checkout, label in order:
                settle()
                say(f"round {round_number + 1}: rebuilding {','.join(names)} with {label} (load {machine.load()[0]})")
                last = round_number == args.rounds - 1 and names == rebuilds[-1]
                keep_as = f"{args.prefix}_{label}" if args.keep and last else None
                out = one_rebuild(checkout, config, args.database or None, names, args.prefix, keep_as)
                results[",".join(names)][label].append(out)
                say(f"  {out['events']:,} events in {out['wall']:.1f} s: {out['events_per_s']:,}/s, "
                    f"CPU {out['cpu'] + out['child_cpu']:.1f} s (machine {out['machine_cpu']} s, WAL {out['wal_mib']} MiB, "
                    f"peak RSS {out.get('max_rss_mib')} MiB, child {out.get('child_max_rss_mib')} MiB, "
                    f"host probe {out['host_probe_ms']} ms); "
                    + ", ".join(f"{v} {f['write_s']} s" for v, f in out["views"].items()))
                # After every pass: a run stopped early keeps what it measured.
                stem = f"{started[:10]}-scale-rebuild" + (f"-{args.label}" if args.label else "")
                write_report(stem, store, args, started, load_before, round_number + 1, labels, checkouts, results)
    say(f"wrote bench/results/{stem}.json and .md")


def write_report(stem: str, store: Path, args: argparse.Namespace, started: str, load_before, rounds: int,
                 labels: list[str], checkouts: list[Path], results: dict[str, dict[str, list]]) -> None:
    ratios = {}
    if len(labels) > 1:
        for what, by in results.items():
            if all(by.values()):   # every checkout measured at least once
                base = statistics.median(r["wall"] for r in by[labels[0]])
                ratios[what] = {label: base / statistics.median(r["wall"] for r in runs) for label, runs in by.items()}
    backend = "postgres" if args.database else "sqlite"
    document = {"benchmark": "bench.scale_rebuild", "store": store.name, "backend": backend, "started": started,
                "ended": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", "machine": machine.machine(),
                "load_before": load_before, "load_after": machine.load(), "rounds": rounds,
                "checkouts": {label: str(c) for label, c in zip(labels, checkouts)},
                "results": {what: {label: runs for label, runs in by.items() if runs} for what, by in results.items()},
                "ratios": ratios}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(document))


if __name__ == "__main__":
    main()
