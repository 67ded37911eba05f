"""Where a warm pull's CPU goes on a large PostgreSQL store against an empty one, in the same run.

    .venv/bin/python -m bench.scale_warm [--pulls 1000000] [--images 200000] [--rounds 5] [--seconds 10]
        [--modes live,paused] [--data /var/tmp/entrepot-scale] [--database-prefix entrepot_scale] [--label NAME]

The large store is the one `bench.scale` built (same shape, same --data and --database-prefix); the empty
one is a fresh database. Both run as bench.scale runs them (`entrepot serve` and, beside it, `entrepot
projections run`), each process naming its PostgreSQL sessions (PGAPPNAME), so the backends' CPU is counted
per process that asked for it. Rounds alternate the stores (and the kinds, by tag and by digest); before
each wrk run every process of both stores is idle again.

Per run: requests/s, p50/p99, and CPU per request of the server, the projections runner, and the
PostgreSQL backends of each: during the wrk run (what competed with the requests for the two cores) and
until the store is idle again (what the run cost in all). Mode `paused` stops the runner (SIGSTOP) for the
wrk run and lets it catch up afterwards: the request path alone, with nothing of the views competing.
While the runner works, its backends' active statements are sampled (pg_stat_activity), to name what
the views' writes spend their time on. Writes bench/results/<date>-scale-warm-<label>.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from bench.measure import wrk
from bench.memory import _tree
from bench.postgres import FreshDatabase
from bench.scale import persistent_database
from bench.scale_measure import start_until_ready, warm_image_upstream
from bench.targets import ORG, entrepot_server
from tests.support.processes import stop_process
from tests.support.server import REPO_ROOT

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


def ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class Store:
    """One store's server, runner and the PostgreSQL backends serving each (by application_name)."""

    def __init__(self, name: str, directory: Path, upstream_url: str, database_url: str, token: str) -> None:
        self.name, self.database = name, database_url.rsplit("/", 1)[1]
        self.server = entrepot_server(directory, upstream_url, database_url)
        self.server.server["admin_token"] = token
        self.server.startup_timeout = 900
        self.server.env = {"PGAPPNAME": f"serve-{name}"}
        self.server.write_config()
        self.runner: subprocess.Popen | None = None

    @contextmanager
    def running(self):
        start_until_ready(self.server, timeout=900)
        try:
            env = {**self.server._env(), "PGAPPNAME": f"runner-{self.name}"}
            with open(self.server.directory / "projections.log", "ab") as log:
                self.runner = subprocess.Popen(self.server.command("projections", "run"), cwd=REPO_ROOT, stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            try:
                yield self
            finally:
                stop_process(self.runner, grace=10)
        finally:
            self.server.stop()

    def backends(self, admin: psycopg.Connection) -> dict[str, list[int]]:
        rows = admin.execute("SELECT application_name, pid FROM pg_stat_activity WHERE datname = %s",
                             (self.database,)).fetchall()
        out: dict[str, list[int]] = {"serve": [], "runner": []}
        for app, pid in rows:
            for role in out:
                if app == f"{role}-{self.name}":
                    out[role].append(pid)
        return out

    def cpu(self, admin: psycopg.Connection) -> dict[str, float]:
        """Seconds of CPU so far: server tree, runner tree, and the backends of each (per pid, summed)."""
        backends = self.backends(admin)
        return {"serve": sum(map(ticks, _tree(self.server.process.pid))) / TICK,
                "runner": sum(map(ticks, _tree(self.runner.pid))) / TICK,
                "pg_serve": sum(map(ticks, backends["serve"])) / TICK,
                "pg_runner": sum(map(ticks, backends["runner"])) / TICK,
                "_pids": {pid for pids in backends.values() for pid in pids}}

    def idle_pids(self, admin: psycopg.Connection) -> list[int]:
        backends = self.backends(admin)
        return _tree(self.server.process.pid) + _tree(self.runner.pid) + backends["serve"] + backends["runner"]


def spent(before: dict, after: dict, requests: int) -> dict:
    """µs of CPU per request per component (a backend that appeared meanwhile counts from zero)."""
    return {key: round(1e6 * (after[key] - before[key]) / max(requests, 1)) for key in after if not key.startswith("_")}


def wait_idle(pids_of, busy_below: float = 0.1, window: float = 0.5, timeout: float = 600.0) -> float:
    """Until every process uses under `busy_below` of a core over `window` s (the set re-read each time)."""
    start = time.monotonic()
    before = {pid: ticks(pid) for pid in pids_of()}
    while time.monotonic() - start < timeout:
        time.sleep(window)
        pids = pids_of()
        after = {pid: ticks(pid) for pid in pids}
        if all((after[pid] - before.get(pid, after[pid])) / TICK < busy_below * window for pid in pids):
            return round(time.monotonic() - start, 2)
        before = after
    return round(time.monotonic() - start, 2)


_LITERALS = re.compile(r"\$\d+|'[^']*'|\b\d+\b")


class ActiveStatements:
    """Samples the runner's backends' active statements every 20 ms while it runs: what the views wait on."""

    def __init__(self, url: str, application: str) -> None:
        self.url, self.application = url, application
        self.counts: collections.Counter = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()

    def __enter__(self) -> ActiveStatements:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute("SELECT left(query, 160) FROM pg_stat_activity WHERE application_name = %s "
                                    "AND state = 'active'", (self.application,)).fetchall()
                self.samples += 1
                for (query,) in rows:
                    self.counts[" ".join(_LITERALS.sub("?", query).split())] += 1
                time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(store: Store, others: list[Store], admin: psycopg.Connection, url: str, seconds: float,
            mode: str, statements: collections.Counter) -> dict:
    every = [store, *others]
    waited = wait_idle(lambda: [pid for s in every for pid in s.idle_pids(admin)])
    before = store.cpu(admin)
    if mode == "paused":
        store.runner.send_signal(signal.SIGSTOP)
    try:
        with ActiveStatements(f"{url.rsplit('/', 1)[0]}/{store.database}", f"runner-{store.name}") as sampled:
            result = wrk(f"{store.server.url}/v2/{ORG}/{store.url_path}", seconds)
            during = store.cpu(admin)
    finally:
        if mode == "paused":
            store.runner.send_signal(signal.SIGCONT)
    caught_up = wait_idle(lambda: store.idle_pids(admin))
    after = store.cpu(admin)
    statements.update(sampled.counts)
    return {"rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "requests": result["requests"], "errors": result.get("errors", 0), "load": os.getloadavg()[0],
            "cpu_us_during": spent(before, during, result["requests"]),
            "cpu_us_total": spent(before, after, result["requests"]),
            "idle_wait_s": waited, "catch_up_s": caught_up, "runner_samples": sampled.samples}


def medians(runs: list[dict]) -> dict:
    out = {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms", "catch_up_s")}
    for part in ("cpu_us_during", "cpu_us_total"):
        out[part] = {key: statistics.median(r[part][key] for r in runs) for key in runs[0][part]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--orgs", type=int, default=36)
    parser.add_argument("--data", default="/var/tmp/entrepot-scale")
    parser.add_argument("--database-prefix", default="entrepot_scale")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--modes", default="live", help="comma-separated: live (runner running), paused")
    parser.add_argument("--kinds", default="by_tag,by_digest")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes, kinds = args.modes.split(","), args.kinds.split(",")
    tag = f"{args.orgs}o-{args.images}i-{args.pulls}p"
    directory = Path(args.data) / f"postgres-{tag}"
    if not (directory / "progress.json").exists() or not json.loads((directory / "progress.json").read_text()).get("views"):
        raise SystemExit(f"no built store in {directory}: run bench.scale --build-only first")
    load_before = os.getloadavg()
    token = "scale-" + secrets.token_hex(8)
    samples: dict = {}
    statements: dict[str, collections.Counter] = {}
    with ExitStack() as stack:
        _, upstream, image = warm_image_upstream(stack, "entrepot-scale-warm-")
        large_url = persistent_database(args.postgres_url, f"{args.database_prefix}_{tag.replace('-', '_')}")
        empty = FreshDatabase(args.postgres_url)
        empty.name = f"{args.database_prefix}_empty_{os.getpid()}"
        empty.create()
        stack.callback(empty.drop)
        empty_url = empty.url
        empty_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-scale-empty-")))
        stores = [Store("large", directory, upstream.url, large_url, token),
                  Store("empty", empty_dir, upstream.url, empty_url, token)]
        for store in stores:
            stack.enter_context(store.running())
            for reference in (image.tag, image.manifest_digest):   # warm: the first pull is a miss
                httpx.get(f"{store.server.url}/v2/{ORG}/{image.repository}/manifests/{reference}", headers=ACCEPT,
                          timeout=60).raise_for_status()
            say(f"{store.name}: serving at {store.server.url}")
        admin = stack.enter_context(psycopg.connect(args.postgres_url, autocommit=True))
        paths = {"by_tag": f"{image.repository}/manifests/{image.tag}",
                 "by_digest": f"{image.repository}/manifests/{image.manifest_digest}"}
        for number in range(args.rounds):
            for mode in modes:
                for kind in kinds:
                    order = stores if number % 2 == 0 else stores[::-1]
                    for store in order:
                        store.url_path = paths[kind]
                        sample = measure(store, [s for s in stores if s is not store], admin, args.postgres_url,
                                         args.seconds, mode, statements.setdefault(store.name, collections.Counter()))
                        samples.setdefault(mode, {}).setdefault(kind, {}).setdefault(store.name, []).append(sample)
                        say(f"round {number} {mode:<6} {kind:<9} {store.name:<5} {sample['rps']:7,.0f} req/s "
                            f"p99 {sample['p99_ms']:6.1f} ms  CPU µs/req during {sample['cpu_us_during']} "
                            f"total {sample['cpu_us_total']}  catch-up {sample['catch_up_s']} s  load {sample['load']:.1f}")
    summary = {mode: {kind: {name: medians(runs) for name, runs in by_store.items()} for kind, by_store in by_kind.items()}
               for mode, by_kind in samples.items()}
    for mode, by_kind in summary.items():
        for kind, by_store in by_kind.items():
            by_store["ratio"] = round(by_store["large"]["rps"] / by_store["empty"]["rps"], 2)
            say(f"{mode} {kind}: large {by_store['large']['rps']:,.0f} / empty {by_store['empty']['rps']:,.0f} "
                f"= {by_store['ratio']}x; CPU µs/req total large {by_store['large']['cpu_us_total']} "
                f"empty {by_store['empty']['cpu_us_total']}")
    document = {"benchmark": "bench.scale_warm", "shape": {"orgs": args.orgs, "images": args.images, "pulls": args.pulls},
                "params": {"rounds": args.rounds, "seconds": args.seconds, "modes": modes, "kinds": kinds,
                           "connections": 32},
                "commit": os.environ.get("SCALE_WARM_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=REPO_ROOT).stdout.strip(),
                "load_before": load_before, "load_after": os.getloadavg(), "summary": summary, "samples": samples,
                "runner_statements": {name: dict(c.most_common(25)) for name, c in statements.items()}}
    stem = f"{datetime.now(UTC):%Y-%m-%d}-scale-warm" + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(document))
    say(f"wrote bench/results/{stem}.json and .md")


def markdown(document: dict) -> str:
    shape, params = document["shape"], document["params"]
    lines = [f"# Warm pulls on a large PostgreSQL store against an empty one: {shape['pulls']:,} pulls, "
             f"{shape['images']:,} images, {shape['orgs']} orgs", "",
             f"Commit {document['commit']}; {params['rounds']} rounds of {params['seconds']:g} s per store and kind, "
             f"wrk -c {params['connections']}, the stores alternating; load average {document['load_before'][0]:.1f} "
             f"before, {document['load_after'][0]:.1f} after. CPU per request until the store is idle again, in µs: "
             "server (`serve`), projections runner (`runner`) and the PostgreSQL backends of each (`pg_*`).", "",
             "| mode | kind | large req/s | empty req/s | ratio | large CPU µs/req | empty CPU µs/req | loads (large runs) |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, by_kind in document["summary"].items():
        for kind, by_store in by_kind.items():
            cpu = {name: ", ".join(f"{k} {v:,.0f}" for k, v in by_store[name]["cpu_us_total"].items())
                   for name in ("large", "empty")}
            loads = " ".join(f"{r['load']:.1f}" for r in document["samples"][mode][kind]["large"])
            lines.append(f"| {mode} | {kind} | {by_store['large']['rps']:,.0f} | {by_store['empty']['rps']:,.0f} | "
                         f"{by_store['ratio']}x | {cpu['large']} | {cpu['empty']} | {loads} |")
    lines += ["", "The runner's active statements, sampled every 20 ms while it ran (most frequent first):", ""]
    for name, counts in document["runner_statements"].items():
        lines.append(f"- {name}: " + "; ".join(f"{n} × `{q[:90]}`" for q, n in list(counts.items())[:8]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
