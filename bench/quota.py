"""`python -m bench.quota`: an org with a quota under a Zipf pull workload, LRU and LFU side by side
(hit ratio, upstream bytes, eviction planning time), and warm by-tag req/s with quotas on vs off.

Part 1 runs Entrepôt in this process (tests/support/inprocess.py) so that it can read the evictor's
planning times; the client is httpx in the same process, so absolute rates mean little there: the
hit ratio and the upstream bytes are what it measures. Part 2 runs two real `entrepot serve`
processes (granian) and wrk, alternating rounds, medians; only their ratio is meant to be read.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import machine, measure
from domain.manifest import DOCKER_MANIFEST
from infra.settings import OrgSettings, Settings, StorageSettings
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer
from tests.support.registry import UpstreamRegistry
from tests.support.server import EntrepotServer

RESULTS = Path(__file__).with_name("results")
REPO = "bench/zipf"


def image_bytes(image) -> int:
    return len(image.manifest_bytes) + sum(len(data) for data in image.blobs.values())


def zipf_sequence(images: int, pulls: int, exponent: float, seed: int) -> list[int]:
    """Pull indices: rank r is pulled with weight 1 / r**exponent; ranks map to images at random."""
    rng = random.Random(seed)
    order = list(range(images))
    rng.shuffle(order)
    weights = [1 / (rank + 1) ** exponent for rank in range(images)]
    return [order[rank] for rank in rng.choices(range(images), weights=weights, k=pulls)]


def pull(client: httpx.Client, base: str, tag: str) -> tuple[bool, int]:
    """(manifest hit, bytes fetched from upstream for this pull: what answered X-Cache MISS)."""
    manifest = client.get(f"{base}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST})
    manifest.raise_for_status()
    upstream = len(manifest.content) if manifest.headers["X-Cache"] == "MISS" else 0
    document = json.loads(manifest.content)
    for digest in [document["config"]["digest"], *[layer["digest"] for layer in document["layers"]]]:
        blob = client.get(f"{base}/blobs/{digest}")
        blob.raise_for_status()
        upstream += len(blob.content) if blob.headers["X-Cache"] == "MISS" else 0
    return manifest.headers["X-Cache"] != "MISS", upstream


def policy_run(workdir: Path, upstream_url: str, policy: str, quota: int, sequence: list[int]) -> dict:
    settings = Settings(data_dir=str(workdir / f"entrepot-{policy}"), storage=StorageSettings(delete_grace_seconds=5),
                        organizations=(OrgSettings(name="hub", upstream=upstream_url, staleness_seconds=86_400,
                                                   quota_bytes=quota, eviction_policy=policy),))
    hits, fetched = 0, 0
    started = time.perf_counter()
    with InProcessServer(settings) as server, httpx.Client(timeout=60) as client:
        base = f"{server.url}/v2/hub/{REPO}"
        for index in sequence:
            hit, upstream = pull(client, base, str(index))
            hits += hit
            fetched += upstream
        elapsed = time.perf_counter() - started
        time.sleep(2)   # the last evictions
        evictor = server.container.evictor
        plans = sorted(evictor.planning_seconds)
        retention = server.container.read_views["retention"]
        usage = retention.usage("hub")
        evictions = len(retention.log(org="hub", kind="eviction", limit=100_000))
    return {"policy": policy, "pulls": len(sequence), "hit_ratio": hits / len(sequence),
            "upstream_bytes": fetched, "evictions": evictions, "usage_after": usage, "quota": quota,
            "plans": len(plans), "plan_ms_median": 1000 * statistics.median(plans) if plans else None,
            "plan_ms_p95": 1000 * plans[int(0.95 * (len(plans) - 1))] if plans else None,
            "plan_ms_max": 1000 * plans[-1] if plans else None, "seconds": elapsed}


def warm_by_tag(workdir: Path, upstream_url: str, rounds: int, seconds: float) -> dict:
    """The same warm manifest by tag from two servers, one with a quota (never reached), one without."""
    servers = {}
    for name, quota in (("quota_off", 0), ("quota_on", 10 * 1024 ** 3)):
        org = {"name": "hub", "upstream": upstream_url, "staleness_seconds": 86_400, "quota_bytes": quota}
        servers[name] = EntrepotServer(workdir / name, [org], startup_timeout=90.0, server={"engine": "granian"}).start()
    try:
        for server in servers.values():
            pull(httpx.Client(timeout=60), f"{server.url}/v2/hub/{REPO}", "0")   # warm
        runs: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                machine.wait_idle([servers[name].process.pid])
                runs[name].append(measure.wrk(f"{servers[name].url}/v2/hub/{REPO}/manifests/0", seconds)["rps"])
    finally:
        for server in servers.values():
            server.stop()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {"rounds": runs, "median_rps": medians, "on_over_off": medians["quota_on"] / medians["quota_off"]}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quota", description=__doc__)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--pulls", type=int, default=1500)
    p.add_argument("--zipf", type=float, default=1.0, help="the Zipf exponent")
    p.add_argument("--quota-share", type=float, default=0.2, help="the quota as a share of all images' bytes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--wrk-seconds", type=float, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--results", type=Path, help="the JSON file to write (default: bench/results/<date>-quota.json)")
    args = p.parse_args()
    load_before = machine.load()
    with tempfile.TemporaryDirectory(prefix="entrepot-quota-") as tmp:
        workdir = Path(tmp)
        upstream = UpstreamRegistry(workdir / "upstream").start()
        try:
            rng = random.Random(args.seed)
            images = [build_image(f"zipf-{i}", layers=1, layer_size=rng.randint(8, 64) * 1024)
                      for i in range(args.images)]
            for i, image in enumerate(images):
                push_image(upstream.url, REPO, str(i), image)
            total = sum(image_bytes(image) for image in images)
            quota = int(args.quota_share * total)
            sequence = zipf_sequence(args.images, args.pulls, args.zipf, args.seed)
            distinct = len(set(sequence))
            policies = [policy_run(workdir, upstream.url, policy, quota, sequence) for policy in ("lru", "lfu")]
            warm = warm_by_tag(workdir, upstream.url, args.rounds, args.wrk_seconds)
        finally:
            upstream.stop()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine.machine(),
              "load_before": load_before, "load_after": machine.load(),
              "workload": {"images": args.images, "bytes_of_all_images": total, "quota": quota,
                           "quota_share": args.quota_share, "pulls": args.pulls, "zipf": args.zipf,
                           "distinct_images_pulled": distinct, "seed": args.seed,
                           "best_possible_hit_ratio_note": "every first pull of an image is a miss"},
              "policies": policies, "warm_by_tag": warm}
    out = args.results or RESULTS / f"{datetime.now(timezone.utc):%Y-%m-%d}-quota.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for run in policies:
        print(f"{run['policy']}: hit ratio {run['hit_ratio']:.3f}, upstream {run['upstream_bytes']} bytes, "
              f"{run['evictions']} evictions, planning median {run['plan_ms_median']} ms (max {run['plan_ms_max']})")
    print(f"warm by tag: quota on {warm['median_rps']['quota_on']:.0f} req/s, off {warm['median_rps']['quota_off']:.0f}"
          f" req/s ({warm['on_over_off']:.3f}x); written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
