"""`python -m bench.audit_pages`: every audit page, for common, middling and rare values, on two codes' views.

    .venv/bin/python -m bench.audit_pages --data /var/tmp/entrepot-scale/postgres-36o-200000i-10000000p \
        --checkout /var/tmp/ck/base --database postgresql://postgres@127.0.0.1:5432/scalebuild16_base \
        --checkout /var/tmp/ck/hashed --database postgresql://postgres@127.0.0.1:5432/scalebuild16_hashed \
        [--rounds 3] [--runs 5] [--label NAME]

Each `--checkout` reads its own `--database` (the same events, its views rebuilt with that code:
`bench.scale_rebuild --keep` leaves them) through its own audit view (`AuditView.query`, as the admin API
and `entrepot audit` call it), in a child process run from that checkout. The values are chosen once,
from the first database: for org, repository, digest, client and actor the most pulled value, the one
in the middle of the ranking and the least pulled; every result; a common and a rare agent substring;
and first pages, deep pages (after the middle id of the log), time ranges and combinations. A planner
that misjudges a value's rows shows on the rarer ones, which a single sampled value can miss (session
23: a less popular org's page 20x slower, the popular one's not at all).

Rounds alternate which checkout goes first; each round runs every page `--runs` times. Reports each
page's median and slowest milliseconds per checkout, their ratio, and whether every checkout gave the
same rows. Writes bench/results/<date>-audit-pages[-label].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine

RESULTS = Path(__file__).resolve().parent / "results"
DAY = 86400
RANKED = ("org", "repository", "digest", "client", "actor")

# Run in the child, from the checkout measured: each page `runs` times through its audit view, as JSON.
CHILD = r"""
import dataclasses, hashlib, json, sys, time
import msgspec
from infra.persistence import event_store_env
from infra.projection_runtime import open_view
from infra.settings import load_settings
config, database, runs, pages = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
settings = load_settings(config)
settings = dataclasses.replace(settings, database=msgspec.structs.replace(settings.database, url=database))
view = open_view("audit", event_store_env(settings))
out = {}
try:
    for name, filters in pages:
        times, answer = [], None
        for _ in range(runs):
            started = time.perf_counter()
            rows = view.query(**filters)
            times.append((time.perf_counter() - started) * 1000)
            answer = hashlib.sha256(repr([r.id for r in rows]).encode()).hexdigest()[:16], len(rows)
        out[name] = {"ms": times, "answer": answer}
finally:
    view.close()
print(json.dumps(out))
"""


def ranked(conn: psycopg.Connection, column: str) -> list[tuple[str, int]]:
    """The column's values, most pulled first (in the live audit rows)."""
    return conn.execute(f"SELECT {column}, count(*) FROM entrepot.audit GROUP BY {column} "
                        f"ORDER BY count(*) DESC, {column}").fetchall()


def pages(url: str) -> list[tuple[str, dict]]:
    """(name, AuditView.query filters) of every page measured, chosen from this database's audit rows."""
    with psycopg.connect(url) as conn:
        last_id, end = conn.execute("SELECT max(id), max(at) FROM entrepot.audit").fetchone()
        chosen: dict[str, list[tuple[str, str, int]]] = {}
        for column in RANKED:
            values = ranked(conn, column)
            chosen[column] = [(rank, *values[i]) for rank, i in
                              (("common", 0), ("middling", len(values) // 2), ("rare", len(values) - 1))]
        results = ranked(conn, "result")
        agents = ranked(conn, "user_agent")
        # The middling org's own repositories, its most and its least pulled (an org and a repository it has).
        repositories = conn.execute("SELECT repository, count(*) FROM entrepot.audit WHERE org = %s GROUP BY 1 "
                                    "ORDER BY 2 DESC, 1", (chosen["org"][1][1],)).fetchall()
    deep, week, month = last_id // 2, end - 7 * DAY, end - 30 * DAY
    out: list[tuple[str, dict]] = []
    for column, values in chosen.items():
        for rank, value, count in values:
            out.append((f"{column} {rank} ({count:,} rows)", {column: value}))
            out.append((f"{column} {rank}, deep page", {column: value, "after_id": deep}))
    for value, count in results:
        out.append((f"result={value} ({count:,} rows)", {"result": value}))
    org = chosen["org"][1][1]   # the middling org, with each of its repositories and results below
    for value, count in results:
        if value != "hit":
            out.append((f"org middling, result={value}, since 7d", {"org": org, "result": value, "since": week}))
    common_agent, rare_agent = agents[0][0], agents[-1][0]
    out += [
        ("org common + repository common", {"org": chosen["org"][0][1], "repository": chosen["repository"][0][1]}),
        (f"org middling + its top repository ({repositories[0][1]:,} rows)",
         {"org": org, "repository": repositories[0][0]}),
        (f"org middling + its least repository ({repositories[-1][1]:,} rows)",
         {"org": org, "repository": repositories[-1][0]}),
        ("since 30d", {"since": month}),
        ("since 30d, org rare", {"since": month, "org": chosen["org"][2][1]}),
        ("deep page, no filter", {"after_id": deep}),
        (f"user_agent common ({agents[0][1]:,} rows)", {"user_agent": common_agent[:12]}),
        (f"user_agent rare ({agents[-1][1]:,} rows)", {"user_agent": rare_agent}),
        ("user_agent no pull has", {"user_agent": "no-such-agent/0"}),
        ("org no pull has", {"org": "no-such-org"}),
        ("digest no pull has", {"digest": "sha256:" + "f" * 64}),
        ("client no pull has", {"client": "192.0.2.1"}),
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the store's directory (bench.scale's, with entrepot.toml)")
    parser.add_argument("--checkout", action="append", required=True, help="code to measure (repeatable)")
    parser.add_argument("--database", action="append", required=True, help="its database URL (one per --checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="runs of each page per round")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if len(args.checkout) != len(args.database):
        parser.error("one --database per --checkout")
    config = Path(args.data).resolve() / "entrepot.toml"
    runs = [(Path(c).resolve().name, Path(c).resolve(), url) for c, url in zip(args.checkout, args.database)]
    started, load_before = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", machine.load()
    measured = pages(args.database[0])
    times: dict[str, dict[str, list[float]]] = {name: {label: [] for label, _, _ in runs} for name, _ in measured}
    answers: dict[str, dict[str, object]] = {name: {} for name, _ in measured}
    for round_number in range(args.rounds):
        for label, checkout, url in (runs if round_number % 2 == 0 else runs[::-1]):
            done = subprocess.run([sys.executable, "-c", CHILD, str(config), url, str(args.runs), json.dumps(measured)],
                                  cwd=checkout, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{label} failed:\n{done.stderr[-4000:]}")
            for name, got in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[name][label] += got["ms"]
                answers[name][label] = got["answer"]
            print(f"round {round_number + 1}: {label} done", flush=True)
    labels = [label for label, _, _ in runs]
    rows = []
    for name, _ in measured:
        p50 = {label: statistics.median(times[name][label]) for label in labels}
        rows.append({"page": name, "p50_ms": p50, "max_ms": {label: max(times[name][label]) for label in labels},
                     "ratio": p50[labels[0]] / p50[labels[-1]] if p50[labels[-1]] else None,
                     "same_rows": len({json.dumps(a) for a in answers[name].values()}) == 1,
                     "rows": answers[name][labels[0]][1]})
    document = {"benchmark": "bench.audit_pages", "store": Path(args.data).name, "started": started,
                "ended": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", "machine": machine.machine(),
                "load_before": load_before, "load_after": machine.load(), "rounds": args.rounds, "runs": args.runs,
                "checkouts": {label: str(c) for label, c, _ in runs}, "pages": rows}
    stem = f"{started[:10]}-audit-pages" + (f"-{args.label}" if args.label else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(document))
    print(markdown(document))


def markdown(document: dict) -> str:
    labels = list(document["checkouts"])
    lines = [f"# Audit pages: {document['store']}", "",
             f"{document['started']} to {document['ended']}, {document['machine']['cores']} cores, load before "
             f"{document['load_before']}, after {document['load_after']}. {document['rounds']} rounds (checkouts "
             f"taking turns) of {document['runs']} runs of each page, 100 rows a page, through each checkout's "
             "`AuditView.query`.", "",
             "| page | rows | " + " | ".join(f"{label} p50 / max ms" for label in labels)
             + f" | {labels[0]} / {labels[-1]} (p50) | same rows |",
             "|---|---:|" + "---:|" * len(labels) + "---:|---|"]
    for row in document["pages"]:
        cells = " | ".join(f"{row['p50_ms'][label]:.2f} / {row['max_ms'][label]:.2f}" for label in labels)
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
        lines.append(f"| {row['page']} | {row['rows']} | {cells} | {ratio} | {'yes' if row['same_rows'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
