"""Archive throughput: events/s and MB/s of `entrepot audit archive` on SQLite and PostgreSQL, against a baseline.

    .venv/bin/python -m bench.archive [--pulls 50000] [--batch 5000] [--rounds 3] [--backend both|sqlite|postgres]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--json bench/results/<file>.json]

Each round writes `--pulls` old pulls through Pulls.record (as the group commit does), runs every view
until caught up (the archiver goes no further than the views), seals, then times one archive run:
read and check the links, write segments to the filesystem blob store, read them back and verify,
record the segment events, delete the events and the audit and chain rows. The baseline, in the same
round on the same store, is what any archive must at least do: read the same pulls from the event
store and decode them (no hashing, no writing). Reported per backend: medians over the rounds of
events/s, MB/s of stored event state and of compressed segments, and the ratio archive/baseline.
PostgreSQL runs in a fresh database created and dropped here; SQLite in a temporary directory.

With `--rebuild`, each round also rebuilds the views that keep archived pulls (counters, analytics,
retention, blobs) twice: before archiving, from the event store (the peer), and after, from the
archive's segments then the store (infra/projection_runtime/archived_pages.py); it checks both give the
same rows and reports the ratio of their times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.postgres import add_backend_arguments, chosen_backends, fresh_database_url
from domain.audit_chain import PULL_TOPIC
from domain.pull import Pull
from infra.projection_runtime import projection_runners, rebuild_many
from infra.settings import AuditSettings, DatabaseSettings, Settings
from interfaces.bootstrap import OfflineAudit

RESULTS = ("hit", "hit", "hit", "miss", "revalidated", "stale")
KEEPING = ("counters", "analytics", "retention", "blobs")   # the views following Pulls that keep archived pulls


def settings_for(backend: str, data_dir: str, postgres_url: str | None) -> Settings:
    database = DatabaseSettings(url=postgres_url or "", schema="bench")
    return Settings(data_dir=data_dir, secret_key="k" * 44, database=database, organizations=(),
                    audit=AuditSettings(retain_days=1))


def write_pulls(audit: OfflineAudit, count: int, batch: int = 1000) -> int:
    for start in range(0, count, batch):
        audit.pulls.record(*(Pull(org="hub", repository=f"library/image{n % 500}", reference="latest",
                                  digest=f"sha256:{n % 500:064x}", result=RESULTS[n % len(RESULTS)],
                                  client=f"10.0.{n % 7}.{n % 250}", user_agent="containerd/2.0", at=10.0 + n)
                             for n in range(start, min(start + batch, count))))
    # one recent pull: the log's last notification is never archived (SQLite would reuse its id)
    audit.pulls.record(Pull(org="hub", repository="library/x", reference="latest", digest="sha256:" + "f" * 64,
                            result="hit", client="10.1.1.1", user_agent="containerd/2.0", at=time.time()))
    return count


def baseline(audit: OfflineAudit) -> tuple[float, int]:
    """Read and decode every old pull from the event store: seconds, stored state bytes."""
    started, position, size = time.perf_counter(), 0, 0
    while True:
        page = audit.pulls.recorder.select_notifications(start=position, limit=500, topics=[PULL_TOPIC],
                                                         inclusive_of_start=False)
        for notification in page:
            audit.pulls.mapper.to_domain_event(notification)
            size += len(notification.state)
        if len(page) < 500:
            return time.perf_counter() - started, size
        position = page[-1].id


def timed_rebuild(audit: OfflineAudit, archive) -> tuple[float, dict]:
    """Seconds to rebuild the views that keep archived pulls (in place, or blue/green), and their rows."""
    started = time.perf_counter()
    rebuild_many(KEEPING, audit.env, archive=archive)
    seconds = time.perf_counter() - started
    return seconds, {name: audit.views[name].dump() for name in KEEPING}


def one_round(backend: str, args: argparse.Namespace) -> dict:
    with ExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-bench-archive-"))
        url = None
        if backend == "postgres":
            url = fresh_database_url(args.postgres_url, stack)
        audit = OfflineAudit(settings_for(backend, data_dir, url))
        stack.callback(audit.close)
        write_pulls(audit, args.pulls)
        runners = projection_runners(audit.env, in_process=True).start()
        try:
            runners.wait_caught_up(timeout=1200, interval=0.05)
        finally:
            runners.stop()
        base_seconds, state_bytes = baseline(audit)
        rebuilt = timed_rebuild(audit, None) if args.rebuild else None
        started = time.perf_counter()
        report = audit.archiver(batch=args.batch).run()
        seconds = time.perf_counter() - started
        assert report.events == args.pulls, report
        extra = {}
        if rebuilt is not None:
            after = timed_rebuild(audit, audit.archive)
            assert after[1] == rebuilt[1], "a rebuild from the archive differs from one from the store"
            extra = {"rebuild_store_seconds": round(rebuilt[0], 3), "rebuild_archive_seconds": round(after[0], 3),
                     "rebuild_archive_to_store": round(after[0] / rebuilt[0], 3)}
        return {**extra, "backend": backend, "events": report.events, "segments": report.segments,
                "segment_bytes": report.bytes, "state_bytes": state_bytes, "seconds": round(seconds, 3),
                "events_per_s": round(report.events / seconds), "state_mb_per_s": round(state_bytes / seconds / 1e6, 2),
                "segment_mb_per_s": round(report.bytes / seconds / 1e6, 2),
                "baseline_seconds": round(base_seconds, 3),
                "baseline_events_per_s": round(args.pulls / base_seconds),
                "ratio_to_baseline": round(base_seconds / seconds, 3), "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000, help="events per segment")
    parser.add_argument("--rounds", type=int, default=3)
    add_backend_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="also time a rebuild from the store and from the archive")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    backends = chosen_backends(args)
    load_before, rows, summary = os.getloadavg(), [], []
    for backend in backends:
        for _ in range(args.rounds):
            row = one_round(backend, args)
            rows.append(row)
            print(f"{backend:8} {row['events']} events in {row['segments']} segments: {row['seconds']:.2f} s, "
                  f"{row['events_per_s']} events/s, {row['state_mb_per_s']} MB/s of event state, "
                  f"{row['segment_mb_per_s']} MB/s of segments ({row['segment_bytes'] / row['state_bytes']:.2f} "
                  f"of the state); baseline read {row['baseline_events_per_s']} events/s "
                  f"(archive/baseline {row['ratio_to_baseline']}); load {row['load'][0]:.2f}", flush=True)
            if args.rebuild:
                print(f"{backend:8} rebuild of {', '.join(KEEPING)}: {row['rebuild_store_seconds']:.2f} s from the "
                      f"store, {row['rebuild_archive_seconds']:.2f} s from the archive then the store "
                      f"(ratio {row['rebuild_archive_to_store']})", flush=True)
        mine = [r for r in rows if r["backend"] == backend]
        summary.append({"backend": backend, **{key: statistics.median(r[key] for r in mine) for key in (
            "events_per_s", "state_mb_per_s", "segment_mb_per_s", "baseline_events_per_s", "ratio_to_baseline",
            *(("rebuild_store_seconds", "rebuild_archive_seconds", "rebuild_archive_to_store") if args.rebuild
              else ()))}})
        print(f"{backend:8} median: {summary[-1]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "bench.archive", "pulls": args.pulls, "batch": args.batch, "rounds": args.rounds,
            "cores": os.cpu_count(), "machine": platform.node(), "python": platform.python_version(),
            "load_before": load_before, "load_after": os.getloadavg(), "results": rows, "medians": summary},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
