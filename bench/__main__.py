"""`python -m bench`: Entrepôt against distribution's proxy mode, side by side, on loopback."""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from bench import report
from bench.scenario import Bench, Options

RESULTS = Path(__file__).with_name("results")

# Every size is a flag too; a profile only sets the defaults. Full: about 10 minutes on 2 cores.
# Tiny only checks that the run works (the test suite's smoke test): one blob transfer per blob
# measurement and no warm-up wrk run, since its figures mean nothing anyway.
PROFILES = {
    "full": dict(rounds=3, wrk_seconds=5, blob_seconds=3, blob_mib=100, small_layers=5, small_layer_kib=256,
                 cold_layers=6, cold_layer_mib=4, cold_clients=20, memory_layer_mib=1024, memory_clients=4,
                 warmup_wrk_seconds=1),
    "quick": dict(rounds=2, wrk_seconds=3, blob_seconds=2, blob_mib=100, small_layers=5, small_layer_kib=64,
                  cold_layers=4, cold_layer_mib=2, cold_clients=20, memory_layer_mib=128, memory_clients=4,
                  warmup_wrk_seconds=1),
    "tiny": dict(rounds=1, wrk_seconds=1, blob_seconds=0.1, blob_mib=2, small_layers=3, small_layer_kib=16,
                 cold_layers=2, cold_layer_mib=0.25, cold_clients=3, memory_layer_mib=4, memory_clients=4,
                 warmup_wrk_seconds=0),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help="smaller images, 2 rounds, no 1 GiB layer (128 MiB instead): about 3 minutes")
    size.add_argument("--tiny", action="store_const", dest="profile", const="tiny",
                      help="tiny images, one short round: checks that the benchmark works, measures nothing")
    p.set_defaults(profile="full")
    p.add_argument("--rounds", type=int, help="rounds; every target is measured once per round, medians reported")
    p.add_argument("--wrk-seconds", type=float, help="duration of each wrk run")
    p.add_argument("--blob-seconds", type=float, help="duration of each blob throughput run (at least one transfer)")
    p.add_argument("--warmup-wrk-seconds", type=float, help="wrk run per target before the rounds (0: none)")
    p.add_argument("--blob-mib", type=float, help="size of the warm blob (the issue: 100)")
    p.add_argument("--small-layers", type=int, help="layers of the image whose manifest wrk fetches")
    p.add_argument("--small-layer-kib", type=int)
    p.add_argument("--cold-layers", type=int, help="layers of each cold-pulled image")
    p.add_argument("--cold-layer-mib", type=float)
    p.add_argument("--cold-clients", type=int, help="concurrent clients of the cold pull (the issue: 20)")
    p.add_argument("--memory-layer-mib", type=float,
                   help="layer pulled cold by 4 clients while the server's RSS is watched (the issue: 1024; 0: skip)")
    p.add_argument("--no-1g", action="store_const", dest="memory_layer_mib", const=128,
                   help="in a full run, use a 128 MiB layer for the memory measurement")
    p.add_argument("--memory-clients", type=int)
    p.add_argument("--no-postgres", dest="postgres", action="store_false",
                   help="skip the second Entrepôt on PostgreSQL")
    p.add_argument("--no-nginx", dest="nginx", action="store_false",
                   help="skip the entrepot-nginx target (nginx in front, sending warm blobs by X-Accel-Redirect)")
    p.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="a database where a fresh database may be created (and dropped afterwards)")
    p.add_argument("--cold-client", choices=("curl", "skopeo"), default="curl",
                   help="what pulls cold images: manifests over httpx then one parallel curl for the blobs "
                        "(default), or skopeo copy to dir: on /dev/shm")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    p.add_argument("--work-dir", type=Path, help="where registries and caches keep their data (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--engine", choices=("uvicorn", "granian"), default="granian",
                   help="the HTTP server Entrepôt runs on ([server] engine)")
    return p


def options(args: argparse.Namespace) -> Options:
    defaults = PROFILES[args.profile]
    values = {f.name: getattr(args, f.name, None) for f in fields(Options)}
    for key, default in defaults.items():
        if values[key] is None:
            values[key] = default
    return Options(**values)


def missing_tools(cold_client: str) -> list[str]:
    needed = ["docker-registry", "wrk", "curl"] + (["skopeo"] if cold_client == "skopeo" else [])
    return [tool for tool in needed if shutil.which(tool) is None]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    chosen = options(args)
    absent = missing_tools(chosen.cold_client)
    if absent:
        print(f"bench: missing {', '.join(absent)} (apt-get install -y docker-registry wrk curl skopeo)",
              file=sys.stderr)
        return 2
    result = Bench(chosen).run()
    print(report.table(result))
    path = report.write_json(result, args.results_dir)
    print(f"\nJSON: {path}   ({result['seconds']:.0f} s, {result['machine']['cores']} cores, "
          f"load {result['machine']['load_before'][0]:.1f} -> {result['machine']['load_after'][0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
