"""`python -m bench.warm_ab_store STORE_DIR ROUNDS BEFORE_REV OUT.json`: warm pulls of two revisions on a
large store and on empty ones, in one run.

STORE_DIR is a store bench.scale built (e.g. /var/tmp/entrepot-scale/sqlite-36o-200000i-10000000p; SQLite,
the embedded default, whose projections run in the server's process). Each round starts, in turn, BEFORE_REV
(a commit) and this checkout on the large store and on an empty store of their own, and runs wrk by tag and
by digest (5 s, 32 connections) against each, one server at a time: requests/s, p99 and the server's CPU
per request (every thread: the projections' writes of the pulls included). Medians per revision and store,
and each revision's large/empty ratio (issue 16's target: >= 0.9x). Writes OUT.json.
"""
import os, sys, time, tempfile, statistics, json
from contextlib import ExitStack
from pathlib import Path
import httpx
from bench.ab import checkout, server as ab_server, cpu_seconds
from bench.images import Pusher, push_image
from bench.targets import DockerRegistry, ORG
from bench.scale_measure import wrk

large_dir = Path(sys.argv[1]); rounds = int(sys.argv[2]); before_rev = sys.argv[3]; out = sys.argv[4]
revs = {"before": checkout("before", before_rev), "after": checkout("after", ".")}
accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
samples = []
with ExitStack() as stack:
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warmab-")))
    upstream = stack.enter_context(DockerRegistry(work / "upstream", work / "storage", access_log=False))
    pusher = Pusher(upstream.url); stack.callback(pusher.close)
    image = push_image(pusher, work, "library/small", "1.0", [64 * 1024] * 5)
    configs = [(rev, store) for store in ("large", "empty") for rev in ("before", "after")]
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for rev, store in order:
            d = large_dir if store == "large" else work / f"empty-{rev}"
            s = ab_server(revs[rev], d, upstream.url, "granian")
            s.startup_timeout = 300
            s.start()
            try:
                for ref in (image.tag, image.manifest_digest):
                    httpx.get(f"{s.url}/v2/{ORG}/{image.repository}/manifests/{ref}", headers=accept, timeout=60).raise_for_status()
                time.sleep(2)
                for kind, ref in (("by_tag", image.tag), ("by_digest", image.manifest_digest)):
                    c0 = cpu_seconds(s.process.pid)
                    res = wrk(f"{s.url}/v2/{ORG}/{image.repository}/manifests/{ref}", 5, 32)
                    c1 = cpu_seconds(s.process.pid)
                    row = {"round": r, "rev": rev, "store": store, "kind": kind, "rps": res["rps"], "p99_ms": res["p99_ms"],
                           "cpu_us_per_req": round(1e6 * (c1 - c0) / (res["rps"] * 5)), "load": os.getloadavg()[0]}
                    samples.append(row); print(row, flush=True)
            finally:
                s.stop()
summary = {}
for rev in ("before", "after"):
    for store in ("large", "empty"):
        for kind in ("by_tag", "by_digest"):
            rows = [x for x in samples if x["rev"] == rev and x["store"] == store and x["kind"] == kind]
            summary[f"{rev} {store} {kind}"] = {"rps": statistics.median(x["rps"] for x in rows),
                                              "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] for x in rows)}
for rev in ("before", "after"):
    for kind in ("by_tag", "by_digest"):
        l, e = summary[f"{rev} large {kind}"], summary[f"{rev} empty {kind}"]
        print(f"{rev} {kind}: large {l['rps']:.0f} req/s ({l['cpu_us_per_req']} us CPU/req) / empty {e['rps']:.0f} ({e['cpu_us_per_req']}) = {l['rps']/e['rps']:.2f}x")
json.dump({"samples": samples, "summary": summary, "before": before_rev, "after": "working tree (time-ordered pull ids)",
           "store": str(large_dir)}, open(out, "w"), indent=1)
