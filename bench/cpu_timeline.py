"""`python -m bench.cpu_timeline`: who used the CPU, and when, while something runs (a rebuild, a bench).

    .venv/bin/python -m bench.cpu_timeline record --out /tmp/timeline.jsonl [--interval 2]
        [--match "import json, os, resource"] [--database postgresql://postgres@127.0.0.1:5432/postgres]
    .venv/bin/python -m bench.cpu_timeline summary /tmp/timeline.jsonl [--window 10] [--phases 96,330,480]

`record` samples until interrupted: the CPU time (user + system, from /proc) of the processes whose command
line holds `--match` (bench.scale_rebuild's child: "the parent") and of their children ("the child": a rebuild's
second process), of every PostgreSQL process (backends with the statement each runs, from pg_stat_activity,
and the server's own processes), and the machine's idle share. `summary` prints, per window (or per phase
between the given seconds), how many cores each used: a pass bound by one process shows it below one core with
the machine idle; a pass bound by the machine shows no idle time whoever runs. Written for issue 16's rebuild
(bench/results/2026-12-01-rebuild-s16.md); Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import psycopg

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU of a process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS   # utime, stime: fields 14 and 15 of stat(5)


def pids(*args: str) -> list[str]:
    return subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout.split()


def record(out: str, interval: float, match: str, database: str) -> None:
    conn = psycopg.connect(database, autocommit=True)
    started = time.time()
    with open(out, "w") as sink:
        while True:
            now = time.time()
            processes = {pid: "parent" for pid in pids("-f", match)}
            for parent in list(processes):
                processes.update({pid: "child" for pid in pids("-P", parent)})
            backends = {str(pid): query for pid, query in conn.execute(
                "SELECT pid, left(query, 90) FROM pg_stat_activity WHERE pid <> pg_backend_pid()").fetchall()}
            postgres = {pid: [cpu_seconds(pid), backends.get(pid)] for pid in pids("-u", "postgres")}
            with open("/proc/stat") as stat:
                machine = [int(n) for n in stat.readline().split()[1:]]
            sink.write(json.dumps({"t": now - started, "machine": machine, "postgres": postgres,
                                   "python": {pid: [role, cpu_seconds(pid)] for pid, role in processes.items()}}) + "\n")
            sink.flush()
            time.sleep(max(0.0, interval - (time.time() - now)))


def used(before: dict, after: dict, role: str | None = None) -> float:
    """CPU seconds the processes (of a role) used between two samples; each process counted while in both."""
    total = 0.0
    for pid, value in after.items():
        if pid not in before or (role is not None and value[0] != role):
            continue
        first, last = (before[pid][1], value[1]) if role is not None else (before[pid][0], value[0])
        if first is not None and last is not None:
            total += last - first
    return total


def summary(path: str, window: float, phases: list[float]) -> None:
    samples = [json.loads(line) for line in open(path)]
    bounds = phases or [samples[0]["t"] + window * i for i in range(int((samples[-1]["t"] - samples[0]["t"]) // window) + 1)]
    nearest = [min(samples, key=lambda s: abs(s["t"] - t)) for t in bounds]
    print("from  to     seconds  parent child postgres (cores)  idle %  busiest statements")
    for a, b in zip(nearest, nearest[1:]):
        took = b["t"] - a["t"]
        if took <= 0:
            continue
        cores = [used(a["python"], b["python"], "parent") / took, used(a["python"], b["python"], "child") / took,
                 used(a["postgres"], b["postgres"]) / took]
        ticks = sum(b["machine"]) - sum(a["machine"])
        idle = 100 * (b["machine"][3] - a["machine"][3]) / ticks if ticks else 0.0
        statements: dict[str, float] = {}
        for pid, (seconds, query) in b["postgres"].items():
            earlier = a["postgres"].get(pid)
            if query and earlier and earlier[0] is not None and seconds is not None:
                statements[query[:40]] = statements.get(query[:40], 0.0) + seconds - earlier[0]
        busiest = "; ".join(f"{s:.1f} s {q}" for q, s in sorted(statements.items(), key=lambda i: -i[1])[:2] if s > 0)
        print(f"{a['t']:5.0f} {b['t']:5.0f} {took:7.0f}  {cores[0]:6.2f} {cores[1]:5.2f} {cores[2]:8.2f}"
              f"          {idle:5.0f}   {busiest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("--out", required=True)
    rec.add_argument("--interval", type=float, default=2.0)
    rec.add_argument("--match", default="import json, os, resource")
    rec.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    show = commands.add_parser("summary")
    show.add_argument("path")
    show.add_argument("--window", type=float, default=10.0)
    show.add_argument("--phases", default="", help="seconds from the start, comma-separated: one line per phase")
    args = parser.parse_args()
    if args.command == "record":
        try:
            record(args.out, args.interval, args.match, args.database)
        except KeyboardInterrupt:
            pass
    else:
        summary(args.path, args.window, [float(t) for t in args.phases.split(",") if t])


if __name__ == "__main__":
    main()
