"""The admin and metrics reads that grew with the cache, as they were and as they are, on one large PostgreSQL store.

    .venv/bin/python -m bench.scale_queries --database-url postgresql://postgres@127.0.0.1:5432/<bench.scale's database>
        [--org team00] [--repeat 15] [--label NAME]

Runs each pair (the query the code ran before issue 16's maintained totals and time blocks, and the
one it runs now) alternately on the same store, in the same run, `--repeat` times each, and reports
medians, their ratio and the load average. The store is one `bench.scale` built (its views already
hold the kept totals). The old `?since=` plan needs the index on `at` the audit view no longer has:
it is created for the run and dropped at its end. The result filters' "before" reads run without the
partial `(result, id)` and `(org, result, id)` indexes: dropped for each such read in a transaction
rolled back after it.
Writes bench/results/<date>-scale-queries[-label].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from projections.audit import DISTINCT_AGENTS, MOST_AGENTS, TIME_BLOCK

RESULTS = Path(__file__).resolve().parent / "results"
DAY = 86400
_LATEST = "(SELECT max(g.generation) FROM {t} AS g WHERE g.org = b.org)"


def pairs(org: str, end: float) -> dict[str, tuple[tuple[str, tuple], tuple[str, tuple]]]:
    """{read: ((before, params), (now, params))}, in the `entrepot` schema's stable (live) names."""
    month, week = end - 30 * DAY, end - 7 * DAY
    since = f"id >= (SELECT min(block) FROM audit_times WHERE latest >= %s) * {TIME_BLOCK}"
    return {
        "org show: bytes_stored (retention usage)": (
            ("SELECT coalesce(sum(s.size), 0) FROM (SELECT DISTINCT digest FROM members WHERE org = %s) d "
             "JOIN sizes s ON s.digest = d.digest", (org,)),
            ("SELECT bytes FROM org_usage WHERE org = %s", (org,))),
        "evictor: the whole cache's usage": (
            ("SELECT coalesce(sum(s.size), 0) FROM (SELECT DISTINCT digest FROM members) d "
             "JOIN sizes s ON s.digest = d.digest", ()),
            ("SELECT bytes FROM org_usage WHERE org = ''", ())),
        "org show: blob count and bytes": (
            ("SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE org = %s AND generation = 1 "
             "AND cached_at IS NOT NULL", (org,)),
            ("SELECT coalesce(sum(blobs), 0), coalesce(sum(bytes), 0) FROM blob_totals WHERE org = %s "
             "AND generation = 1", (org,))),
        "org show: tag and repository counts": (
            ("SELECT count(*), count(DISTINCT repository) FROM tags WHERE org = %s", (org,)),
            ("SELECT tags, repositories FROM tag_totals WHERE org = %s", (org,))),
        "metrics: blobs per org": (
            ("SELECT org, count(*), coalesce(sum(size), 0) FROM blobs AS b WHERE cached_at IS NOT NULL "
             f"AND b.generation = {_LATEST.format(t='blobs')} GROUP BY org", ()),
            (f"SELECT org, blobs, bytes FROM blob_totals AS b WHERE generation = {_LATEST.format(t='blob_totals')}",
             ())),
        "metrics: manifests per org": (
            ("SELECT org, count(*), coalesce(sum(size), 0) FROM manifests GROUP BY org", ()),
            ("SELECT org, manifests, bytes FROM manifest_totals WHERE manifests > 0", ())),
        "metrics: tags per org": (
            ("SELECT org, count(*) FROM tags GROUP BY org", ()),
            ("SELECT org, tags FROM tag_totals WHERE tags > 0", ())),
        "audit ?since=30d, first page": (
            ("SELECT * FROM audit WHERE at >= %s ORDER BY id LIMIT 101", (month,)),
            (f"SELECT * FROM audit WHERE {since} AND at + 0 >= %s ORDER BY id LIMIT 101", (month, month))),
        "audit ?org&result=miss&since=7d, first page": (
            ("SELECT * FROM audit WHERE org = %s AND result = 'miss' AND at >= %s ORDER BY id LIMIT 101", (org, week)),
            (f"SELECT * FROM audit WHERE {since} AND org = %s AND result = 'miss' AND result <> 'hit' AND at + 0 >= %s "
             "ORDER BY id LIMIT 101", (week, org, week))),
        # Before: the plans the audit view had before its partial result indexes (they are dropped for the
        # "before" reads only, in a transaction rolled back after each: WITHOUT_PARTIAL).
        "audit ?org&result=miss&since=7d, first page (partial indexes)": (
            (f"SELECT * FROM audit WHERE {since} AND org = %s AND result = 'miss' AND at + 0 >= %s ORDER BY id "
             "LIMIT 101", (week, org, week)),
            (f"SELECT * FROM audit WHERE {since} AND org = %s AND result = 'miss' AND result <> 'hit' AND at + 0 >= %s "
             "ORDER BY id LIMIT 101", (week, org, week))),
        "audit ?result=denied, first page": (
            ("SELECT * FROM audit WHERE result = 'denied' ORDER BY id LIMIT 101", ()),
            ("SELECT * FROM audit WHERE result = 'denied' AND result <> 'hit' ORDER BY id LIMIT 101", ())),
        "audit ?org&result=error, first page": (
            ("SELECT * FROM audit WHERE org = %s AND result = 'error' ORDER BY id LIMIT 101", (org,)),
            ("SELECT * FROM audit WHERE org = %s AND result = 'error' AND result <> 'hit' ORDER BY id LIMIT 101",
             (org,))),
        # A substring no agent has: the page walked the whole log; now the view lists its distinct agents
        # (one probe each of the (user_agent, id) index) and, none matching, reads no page at all.
        "audit ?user_agent=<a substring no pull has>, first page": (
            ("SELECT * FROM audit WHERE strpos(user_agent, %s) > 0 ORDER BY id LIMIT 101", ("no-such-agent/0",)),
            (f"SELECT * FROM ({DISTINCT_AGENTS.format(audit='audit').replace('?', '%s')}) AS d "
             "WHERE strpos(agent, %s) > 0", (MOST_AGENTS + 1, "no-such-agent/0"))),
    }


WITHOUT_PARTIAL = {"audit ?org&result=miss&since=7d, first page (partial indexes)", "audit ?result=denied, first page",
                   "audit ?org&result=error, first page"}
PARTIAL_INDEXES = ("audit_result_id", "audit_org_result_id")


def timed(conn: psycopg.Connection, text: str, params: tuple, hidden: tuple[str, ...] = ()) -> tuple[float | None, object]:
    """Milliseconds and rows; None when it ran past the statement timeout (then it is not run again).
    `hidden`: indexes dropped for this read only, in a transaction rolled back after it (not timed)."""
    with conn.transaction(force_rollback=True) if hidden else nullcontext():
        for index in hidden:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        started = time.perf_counter()
        try:
            rows = conn.execute(text, params).fetchall()
        except psycopg.errors.QueryCanceled:
            return None, None
        return (time.perf_counter() - started) * 1000, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--org", default="team00")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--label", default="")
    parser.add_argument("--timeout-s", type=float, default=30, help="a read running longer is given up (and said so)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    out: dict = {}
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute("SET search_path TO entrepot")
        conn.execute(f"SET statement_timeout = {int(args.timeout_s * 1000)}")
        version = conn.execute("SELECT version FROM view_versions WHERE projection = 'audit'").fetchone()[0]
        table = f"audit_v{version}"
        partial = tuple(f"{index}_v{version}" for index in PARTIAL_INDEXES)
        with conn.transaction():   # no statement timeout for building the old plan's index
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute(f"CREATE INDEX IF NOT EXISTS scale_queries_audit_at ON {table} (at)")
        conn.execute(f"ANALYZE {table}")
        try:
            end = conn.execute("SELECT max(at) FROM audit").fetchone()[0]
            for name, ((before, before_params), (now, now_params)) in pairs(args.org, end).items():
                samples: dict[str, list[float]] = {"before": [], "now": []}
                answers: dict = {}
                timed_out = False
                for _ in range(args.repeat):   # alternating, so load swings reach both alike
                    for key, text, params in (("before", before, before_params), ("now", now, now_params)):
                        if key == "before" and timed_out:
                            continue
                        hidden = partial if key == "before" and name in WITHOUT_PARTIAL else ()
                        ms, rows = timed(conn, text, params, hidden)
                        if ms is None:
                            timed_out = True
                            continue
                        samples[key].append(ms)
                        answers[key] = rows
                p50 = {key: round(statistics.median(values), 2) if values else None for key, values in samples.items()}
                same = None if timed_out else sorted(map(tuple, answers["before"])) == sorted(map(tuple, answers["now"]))
                out[name] = {"before_p50_ms": p50["before"], "now_p50_ms": p50["now"], "before_timed_out": timed_out,
                             "ratio": None if timed_out else round(p50["before"] / max(p50["now"], 1e-3), 1),
                             "same_answer": same, "load": os.getloadavg()}
                print(f"{name}: {'timed out' if timed_out else p50['before']} ms -> {p50['now']} ms "
                      f"(same answer: {same})", flush=True)
        finally:
            conn.execute("DROP INDEX IF EXISTS scale_queries_audit_at")
    document = {"benchmark": "bench.scale_queries", "database": args.database_url.rsplit("/", 1)[-1], "org": args.org,
                "repeat": args.repeat, "load_before": load_before, "load_after": os.getloadavg(), "reads": out}
    stem = f"{datetime.now(UTC):%Y-%m-%d}-scale-queries" + (f"-{args.label}" if args.label else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [f"# Reads that grew with the cache, before and now: `{document['database']}`, org {args.org}", "",
             f"Medians of {args.repeat} runs each, alternating; load average {_load(load_before)} before, "
             f"{_load(document['load_after'])} after.", "",
             "| read | before (p50) | now (p50) | ratio | same answer | load (1-min) |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {_before(r, args.timeout_s)} | {r['now_p50_ms']} ms | "
              f"{'' if r['ratio'] is None else str(r['ratio']) + 'x'} | {r['same_answer']} | {r['load'][0]:.2f} |"
              for name, r in out.items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote bench/results/{stem}.json and .md")


def _before(read: dict, timeout_s: float) -> str:
    return f"> {timeout_s:g} s (given up)" if read["before_timed_out"] else f"{read['before_p50_ms']} ms"


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
