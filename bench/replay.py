"""How long `entrepot replay` takes, against its peer in the same run: rebuilding every view in place.

    .venv/bin/python -m bench.replay [--pulls 20000] [--images 200] [--backend both|sqlite|postgres]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--json bench/results/<file>.json]

The events are written as in bench.projections (pulls through Pulls.record, 1000 per transaction).
Then, per backend: `replay_until(now)` into a new SQLite file (every view, plus robots and the admin
log, then one file assembled), and the peer, `rebuild()` of every view of that backend (what an
operator runs after an upgrade). Both decode every event each view follows; the ratio says what the
point-in-time cutoff and the assembly cost on top. Reports seconds, events/s over the apps' events
and the ratio, with the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.postgres import add_backend_arguments, chosen_backends, fresh_env
from bench.projections import write_events
from infra.projection_runtime import rebuild
from infra.projection_runtime.point_in_time import replay_until
from projections import PROJECTION_NAMES


def run_backend(backend: str, args: argparse.Namespace, stack: ExitStack) -> dict:
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="entrepot-bench-replay-")))
    env = fresh_env(backend, args.postgres_url, stack, scratch / "data")
    heads = write_events(env, args.pulls, args.images)
    events = sum(heads.values())
    started = time.perf_counter()
    replay_until(env, time.time(), scratch / "replay.db")
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    for name in PROJECTION_NAMES:
        rebuild(name, env)
    rebuild_s = time.perf_counter() - started
    row = {"backend": backend, "events": events, "replay_s": round(replay_s, 2), "rebuild_all_s": round(rebuild_s, 2),
           "replay_events_per_s": round(events / replay_s), "ratio_replay_to_rebuild": round(replay_s / rebuild_s, 2),
           "file_bytes": (scratch / "replay.db").stat().st_size}
    print(f"{backend}: {events} events; replay {replay_s:.2f} s ({row['replay_events_per_s']} events/s), "
          f"rebuild of every view {rebuild_s:.2f} s; replay/rebuild {row['ratio_replay_to_rebuild']}; "
          f"file {row['file_bytes'] // 1024} KiB; load {os.getloadavg()[0]:.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=20_000)
    parser.add_argument("--images", type=int, default=200)
    add_backend_arguments(parser)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    backends = chosen_backends(args)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    with ExitStack() as stack:
        rows = [run_backend(backend, args, stack) for backend in backends]
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "bench.replay", "pulls": args.pulls, "images": args.images, "cores": os.cpu_count(),
            "load_before": load_before, "load_after": os.getloadavg(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
