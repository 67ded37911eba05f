"""`python -m bench.rebuild_cache N OUT.json`: does a larger SQLite page cache speed up an offline rebuild?

N pulls (bench.rebuild's workload) on SQLite, rebuilt in one pass with 256 MiB of page cache per view
(`rebuild_many(cache_kib=...)`), then with SQLite's default (2 MiB), on the same store. The larger cache
runs first, so any warm-up of the store favours the default. Prints and writes events/s with the load.
"""

from __future__ import annotations

import json
import sys
import tempfile

import bench.rebuild as rebuild_bench
from bench import machine
from bench.rebuild import PULL_VIEWS, one_pass, write_events
from infra.persistence import embedded_env


def main() -> int:
    pulls, out_path = int(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="entrepot-rebuild-cache-") as directory:
        env = embedded_env(directory)
        write_events(env, pulls, 1000)
        out: dict = {"benchmark": "bench.rebuild_cache", "machine": machine.machine(), "pulls": pulls,
                     "load_before": machine.load()}
        for kib in (262144, 0):
            rebuild_bench.CACHE_KIB = kib
            run = one_pass(list(PULL_VIEWS), env, 5000, None)
            run["pull_events_per_s"] = round(pulls / run["seconds"])
            out[f"cache_kib_{kib}"] = run
            print(f"cache {kib} KiB: {run['seconds']} s ({run['pull_events_per_s']} pull events/s; CPU "
                  f"{run['cpu_seconds']} s; writes {run['view_write_seconds']}; load {run['load']})", flush=True)
    with open(out_path, "w") as f:
        f.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
