"""Save -> view lag on PostgreSQL: one Pull saved at a time, timed until its audit row and tracking are visible.

    .venv/bin/python bench/projection_lag.py [--url postgresql://postgres@127.0.0.1:5432/postgres] [--count 200]
        [--separate]   # runners in an `entrepot projections run` process instead of this one

Creates a scratch database entrepot_bench_<random> and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from application.pulls import Pulls  # noqa: E402
from domain.pull import Pull  # noqa: E402
from infra.persistence import postgres_env, prepare_database  # noqa: E402
from infra.projection_runtime import LockedRunners, open_view, wait_caught_up  # noqa: E402


def measure(env: dict, count: int) -> list[float]:
    pulls, audit = Pulls(env=env), open_view("audit", env)
    lags = []
    try:
        for i in range(count):
            pulls.record(Pull(org="hub", repository="library/alpine", reference="3.20", digest="sha256:" + "1" * 64,
                              result="hit", client="10.0.0.1", user_agent="bench", at=float(i)))
            saved = time.perf_counter()   # committed: from here on the runner may see it
            head = pulls.recorder.max_notification_id()
            while (audit.max_tracking_id("Pulls") or 0) < head:
                time.sleep(0.001)
            lags.append((time.perf_counter() - saved) * 1000)
            time.sleep(0.01)  # one pull at a time, as a quiet replica sees them
    finally:
        pulls.close()
        audit.close()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--separate", action="store_true")
    args = parser.parse_args()
    name = f"entrepot_bench_{secrets.token_hex(3)}"
    url = urlsplit(args.url)._replace(path=f"/{name}").geturl()
    env = postgres_env(url, "bench")
    prepare_database(env)
    runner = None
    try:
        if args.separate:
            config = Path(tempfile.mkdtemp()) / "entrepot.toml"
            config.write_text(f'[server]\ndata_dir = "{config.parent}"\n[database]\nurl = "{url}"\nschema = "bench"\n')
            runner = subprocess.Popen([sys.executable, "-m", "interfaces.cli", "projections", "run", "--config",
                                       str(config)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
            runner.stdout.readline()   # "running projections: ..."
        else:
            runner = LockedRunners(env).start()
        wait_caught_up(env, timeout=30)
        lags = measure(env, args.count)
        q = statistics.quantiles(lags, n=100)
        mode = "separate process" if args.separate else "in-process"
        print(f"save->audit view lag, runners {mode}, {len(lags)} pulls: p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, "
              f"p99 {q[98]:.1f} ms, max {max(lags):.1f} ms (from the save's commit; polled every 1 ms)")
    finally:
        if isinstance(runner, subprocess.Popen):
            runner.terminate()
            runner.wait(timeout=15)
        elif runner is not None:
            runner.stop()
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
