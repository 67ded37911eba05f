"""Each projection's catch-up speed: events/s from position 0 over N recorded pulls, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.projections [--pulls 50000] [--images 1000] [--backend both|sqlite|postgres]
        [--projection blobs ...]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--json bench/results/<file>.json]

Pulls are written through the application's own write path (Pulls.record, many pulls per transaction,
as the group commit does), with the CacheRecords events of `--images` cached images (5 layers each). Then
each projection runs alone, from an empty view, and is timed until it has processed every event of
the applications it follows (it tracks every event, so the count is the apps' notification count).
The target (issue 12): at least 3x the warm pull rate, 3 x 1,200 = 3,600 events/s, on both backends.
PostgreSQL runs in a fresh database created and dropped here; SQLite in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from application.pulls import Pulls
from application.cache_records import CacheRecords
from bench.postgres import add_backend_arguments, chosen_backends, fresh_env
from domain.pull import Pull
from infra.projection_runtime import projection_runners
from infra.projection_runtime.opening import application_classes
from projections import PROJECTION_NAMES

TARGET = 3 * 1200            # events/s: 3x the warm pull rate that left the blobs view behind (issue 12)
RESULTS = ("hit", "hit", "hit", "hit", "miss", "revalidated", "stale")


def write_events(env: dict, pulls_count: int, images: int, batch: int = 1000) -> dict[str, int]:
    """CacheRecords events for `images` cached images, then `pulls_count` pulls of them; the apps' heads."""
    records, pulls = CacheRecords(env=env), Pulls(env=env)
    try:
        records.apply_org("hub", {"upstream": "docker.io"})
        digests = []
        for i in range(images):
            digest = f"sha256:{i:064x}"
            layers = [f"sha256:{i:032x}{j:032x}" for j in range(5)]
            records.record_manifest("hub", f"library/image{i}", digest,
                                     "application/vnd.oci.image.manifest.v1+json", 900, layers, [], 1.0)
            for layer in layers:
                records.record_blob("hub", f"library/image{i}", layer, 1000, 2.0)
            records.record_tag("hub", f"library/image{i}", "latest", digest,
                                "application/vnd.oci.image.manifest.v1+json", 3.0)
            digests.append(digest)
        for start in range(0, pulls_count, batch):
            pulls.record(*(Pull(org="hub", repository=f"library/image{n % images}", reference="latest",
                                digest=digests[n % images], result=RESULTS[n % len(RESULTS)],
                                client=f"10.0.{n % 7}.{n % 250}", user_agent="containerd/2.0", at=10.0 + n)
                           for n in range(start, min(start + batch, pulls_count))))
        return {"Registry": records.recorder.max_notification_id() or 0,
                "Pulls": pulls.recorder.max_notification_id() or 0}
    finally:
        records.close()
        pulls.close()


def catch_up(env: dict, name: str, heads: dict[str, int]) -> dict:
    """Run one projection alone from an empty view until it has processed every event; its rate."""
    events = sum(heads.get(app.name, 0) for app in application_classes(name))   # Access: no events here
    runners = projection_runners(env, in_process=True)
    runners = type(runners)(env, (name,))   # the backend's runners, for this projection only
    started = time.perf_counter()           # includes starting the workers: opening the view and the apps
    runners.start()
    try:
        runners.wait_caught_up(timeout=600, interval=0.01)
        seconds = time.perf_counter() - started
    finally:
        runners.stop()
    return {"projection": name, "events": events, "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds), "target": TARGET, "verdict": "PASS" if events / seconds >= TARGET
            else "MISS"}


def run_backend(backend: str, args: argparse.Namespace, stack: ExitStack) -> list[dict]:
    env = fresh_env(backend, args.postgres_url, stack,
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-bench-")))
    started = time.perf_counter()
    heads = write_events(env, args.pulls, args.images)
    written = time.perf_counter() - started
    print(f"{backend}: wrote {heads['Pulls']} pull and {heads['Registry']} cache-record events in {written:.1f} s",
          flush=True)
    rows = []
    for name in args.projection or PROJECTION_NAMES:
        row = {"backend": backend, **catch_up(env, name, heads)}
        print(f"  {name:10} {row['events']:7} events in {row['seconds']:6.2f} s: {row['events_per_s']:7} events/s "
              f"({row['verdict']} >= {TARGET})", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=1000)
    add_backend_arguments(parser)
    parser.add_argument("--projection", action="append", choices=PROJECTION_NAMES,
                        help="measure only this one (repeatable); default: every projection")
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
            "benchmark": "bench.projections", "pulls": args.pulls, "images": args.images, "target": TARGET,
            "cores": os.cpu_count(), "machine": platform.node(), "python": platform.python_version(),
            "load_before": load_before, "load_after": os.getloadavg(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
