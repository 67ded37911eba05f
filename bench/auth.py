"""Access control's cost: warm manifest GETs by tag with Bearer auth on vs off, and a cold token fetch + pull.

`python -m bench.auth [--rounds 3] [--wrk-seconds 10]` (with .venv/bin/python). One `entrepot serve` with
two orgs on the same upstream: `open` (anonymous_pull) and `private` (a robot's token). Per round, in
alternating order: wrk on the open org's manifest without credentials, on the private org's with
`Authorization: Bearer <token>`, and with the robot's Basic credentials. Then, per round, one cold pull
of a fresh image each way: anonymous on `open`, and token fetch + manifest + blobs on `private`.
Medians and ratios are printed and written to bench/results/<date>-auth.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.measure import wrk
from tests.support.images import build_image, push_image
from tests.support.registry import UpstreamRegistry
from tests.support.server import EntrepotServer

ADMIN = "bench-auth-admin-token"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
RESULTS = Path(__file__).with_name("results")


def org(name: str, upstream: str, anonymous_pull: bool) -> dict:
    return {"name": name, "upstream": upstream, "staleness_seconds": 86_400, "max_stale_seconds": 7 * 86_400,
            "anonymous_pull": anonymous_pull}


def cold_pull(base: str, org_name: str, repository: str, image, credentials: tuple[str, str] | None) -> float:
    """Seconds for one client's pull: (token fetch,) manifest, every blob."""
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as http:
        headers = {"Accept": ACCEPT}
        if credentials is not None:
            answer = http.get("/v2/token", params={"service": "entrepot",
                                                   "scope": f"repository:{org_name}/{repository}:pull"},
                              auth=credentials)
            answer.raise_for_status()
            headers["Authorization"] = f"Bearer {answer.json()['token']}"
        http.get(f"/v2/{org_name}/{repository}/manifests/1.0", headers=headers).raise_for_status()
        for digest in image.blobs:
            http.get(f"/v2/{org_name}/{repository}/blobs/{digest}", headers=headers).raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    upstream = UpstreamRegistry(work / "upstream").start()
    warm = build_image("bench-auth/warm", layers=3, layer_size=50_000)
    push_image(upstream.url, "library/warm", "1.0", warm)
    server = EntrepotServer(work / "entrepot", [org("open", upstream.url, True), org("private", upstream.url, False)],
                            startup_timeout=90.0, env={"ENTREPOT_ADMIN_TOKEN": ADMIN})
    server.start()
    try:
        made = httpx.post(f"{server.url}/api/v1/organizations/private/robots", json={"name": "bench",
                          "repositories": ["*"]}, headers={"Authorization": f"Bearer {ADMIN}"}).json()
        credentials = (made["username"], made["token"])
        basic = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        results: dict[str, list] = {"off": [], "bearer": [], "basic": [], "cold_anonymous_s": [], "cold_token_s": []}
        for round_number in range(args.rounds):
            # a fresh token per round: each lives 300 s
            token = httpx.get(f"{server.url}/v2/token", params={"scope": "repository:private/library/warm:pull"},
                              auth=credentials).json()["token"]
            urls = {"off": (f"{server.url}/v2/open/library/warm/manifests/1.0", {}),
                    "bearer": (f"{server.url}/v2/private/library/warm/manifests/1.0", {"Authorization": f"Bearer {token}"}),
                    "basic": (f"{server.url}/v2/private/library/warm/manifests/1.0", {"Authorization": basic})}
            for url, headers in urls.values():   # warm: cached, and the token / credentials verified once
                httpx.get(url, headers={"Accept": ACCEPT, **headers}).raise_for_status()
            order = list(urls) if round_number % 2 == 0 else list(reversed(urls))
            for name in order:
                url, headers = urls[name]
                results[name].append(wrk(url, args.wrk_seconds, connections=args.connections, headers=headers))
                print(f"round {round_number + 1} {name}: {results[name][-1]['rps']:.0f} req/s", flush=True)
            cold = build_image(f"bench-auth/cold-{round_number}", layers=2, layer_size=200_000)
            push_image(upstream.url, f"cold/a{round_number}", "1.0", cold)
            push_image(upstream.url, f"cold/b{round_number}", "1.0", cold)
            results["cold_anonymous_s"].append(cold_pull(server.url, "open", f"cold/a{round_number}", cold, None))
            results["cold_token_s"].append(cold_pull(server.url, "private", f"cold/b{round_number}", cold, credentials))
        medians = {name: statistics.median(r["rps"] for r in results[name]) for name in ("off", "bearer", "basic")}
        summary = {
            "warm_by_tag_rps_median": medians,
            "bearer_vs_off": medians["bearer"] / medians["off"],
            "basic_vs_off": medians["basic"] / medians["off"],
            "cold_anonymous_s_median": statistics.median(results["cold_anonymous_s"]),
            "cold_token_fetch_and_pull_s_median": statistics.median(results["cold_token_s"]),
        }
        report = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "rounds": args.rounds,
                  "wrk_seconds": args.wrk_seconds, "connections": args.connections,
                  "load_average": Path("/proc/loadavg").read_text().split()[:3], "summary": summary,
                  "raw": results}
        print(json.dumps(summary, indent=2))
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{datetime.now(UTC).date().isoformat()}-auth.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {out}")
    finally:
        server.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
