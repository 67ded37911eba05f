"""`python -m bench.what_if`: the what-if simulator on bench/quota.py's workload: LRU, LFU and GDSF side by side.

The same images (seeded sizes, 8-64 KiB layers), the same Zipf pull sequence and the same quota as
`python -m bench.quota`, replayed through domain/what_if.py alone (no server): hit ratio, upstream bytes,
evictions per policy, and how long each replay took. Compare its LRU/LFU lines with a bench.quota run of
the same arguments (the real quota) to see how close the model is; GDSF exists only in the simulator.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import machine
from bench.quota import REPO, image_bytes, zipf_sequence
from domain.what_if import POLICIES, Catalog, RecordedPull, simulate
from tests.support.images import build_image

RESULTS = Path(__file__).with_name("results")


def workload(images: int, pulls: int, exponent: float, seed: int, quota_share: float) -> tuple[Catalog, list, int]:
    rng = random.Random(seed)   # bench.quota draws the images' layer sizes from the same seeded generator
    built = [build_image(f"zipf-{i}", layers=1, layer_size=rng.randint(8, 64) * 1024) for i in range(images)]
    catalog = Catalog({("hub", REPO, image.digest): {image.digest: len(image.manifest_bytes),
                                                     **{d: len(b) for d, b in image.blobs.items()}}
                       for image in built})
    sequence = zipf_sequence(images, pulls, exponent, seed)
    recorded = [RecordedPull("hub", REPO, built[index].digest, 1_000_000.0 + 5.0 * n) for n, index in enumerate(sequence)]
    return catalog, recorded, int(quota_share * sum(image_bytes(image) for image in built))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.what_if", description=__doc__)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--pulls", type=int, default=1000)
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--quota-share", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--results", type=Path)
    args = p.parse_args()
    load_before = machine.load()
    catalog, pulls, quota = workload(args.images, args.pulls, args.zipf, args.seed, args.quota_share)
    runs = []
    for policy in POLICIES:
        started = time.perf_counter()
        outcome = simulate(pulls, catalog, quota, policy)
        runs.append({"policy": policy, "hit_ratio": outcome.hit_ratio, "hits": outcome.hits,
                     "upstream_bytes": outcome.upstream_bytes, "evictions": outcome.evictions,
                     "seconds": round(time.perf_counter() - started, 3)})
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine.machine(),
              "load_before": load_before, "load_after": machine.load(),
              "workload": {"images": args.images, "pulls": args.pulls, "zipf": args.zipf, "quota": quota,
                           "quota_share": args.quota_share, "seed": args.seed}, "policies": runs}
    out = args.results or RESULTS / f"{datetime.now(timezone.utc):%Y-%m-%d}-what-if.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        print(f"{run['policy']:5} hit ratio {run['hit_ratio']:.3f}  upstream {run['upstream_bytes']:>10} B  "
              f"{run['evictions']:>4} evictions  ({run['seconds']} s)")
    print(f"load {load_before} -> {result['load_after']}; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
