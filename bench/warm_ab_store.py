"""`python -m bench.warm_ab_store STORE_DIR ROUNDS BEFORE_REV OUT.json`: warm pulls of two revisions on a
large store and on empty ones, in one run.

STORE_DIR is a store bench.scale built (e.g. /var/tmp/entrepot-scale/sqlite-36o-200000i-10000000p; SQLite,
the embedded default, whose projections run in the server's process). Each round starts, in turn, BEFORE_REV
(a commit) and this checkout on the large store and on an empty store of their own, and runs wrk by tag and
by digest (5 s, 32 connections) against each, one server at a time: requests/s, p99 and the server's CPU
per request (every thread: the projections' writes of the pulls included). Medians per revision and store,
and each revision's large/empty ratio (issue 16's target: >= 0.9x). Writes OUT.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.ab import checkout, cpu_seconds, server
from bench.measure import wrk
from bench.scale_measure import warm_image_upstream
from bench.targets import ORG

ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
KINDS = ("by_tag", "by_digest")


def measure(url: str, pid: int) -> dict:
    """wrk for 5 s; requests/s, p99 and the server's CPU per request."""
    before = cpu_seconds(pid)
    result = wrk(url, 5, 32)
    spent = cpu_seconds(pid) - before
    return {"rps": result["rps"], "p99_ms": result["p99_ms"],
            "cpu_us_per_req": round(1e6 * spent / max(1.0, result["rps"] * 5)), "load": os.getloadavg()[0]}


def main() -> None:
    large_dir, rounds, before_rev, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    revisions = {"before": checkout("before", before_rev), "after": checkout("after", ".")}
    samples = []
    with ExitStack() as stack:
        work, upstream, image = warm_image_upstream(stack, "warm-ab-store-")
        configs = [(rev, store) for store in ("large", "empty") for rev in revisions]
        for number in range(rounds):   # the order rotates every round: a loaded machine drifts
            for rev, store in configs[number % len(configs):] + configs[:number % len(configs)]:
                target = server(revisions[rev], large_dir if store == "large" else work / f"empty-{rev}",
                                upstream.url, "granian")
                target.startup_timeout = 300
                target.start()
                try:
                    base = f"{target.url}/v2/{ORG}/{image.repository}/manifests/"
                    references = dict(zip(KINDS, (image.tag, image.manifest_digest)))
                    for reference in references.values():   # warm: pulled once, so both are hits
                        httpx.get(base + reference, headers=ACCEPT, timeout=60).raise_for_status()
                    time.sleep(2)
                    for kind, reference in references.items():
                        row = {"round": number, "rev": rev, "store": store, "kind": kind,
                               **measure(base + reference, target.process.pid)}
                        samples.append(row)
                        print(row, flush=True)
                finally:
                    target.stop()
    summary = {f"{rev} {store} {kind}": {
        "rps": statistics.median(x["rps"] for x in rows), "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] for x in rows)}
        for rev in revisions for store in ("large", "empty") for kind in KINDS
        for rows in [[x for x in samples if (x["rev"], x["store"], x["kind"]) == (rev, store, kind)]]}
    for rev in revisions:
        for kind in KINDS:
            large, empty = summary[f"{rev} large {kind}"], summary[f"{rev} empty {kind}"]
            print(f"{rev} {kind}: large {large['rps']:.0f} req/s ({large['cpu_us_per_req']} us CPU/req) / "
                  f"empty {empty['rps']:.0f} ({empty['cpu_us_per_req']}) = {large['rps'] / empty['rps']:.2f}x")
    Path(out).write_text(json.dumps({"samples": samples, "summary": summary, "before": before_rev,
                                     "after": "this checkout", "store": str(large_dir)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
