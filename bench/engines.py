"""Entrepôt on uvicorn against Entrepôt on granian, with the distribution proxy peer measured in the
same run: warm 100 MiB blob (1 and 4 curl streams) and warm manifest by tag (wrk), alternating.

    .venv/bin/python -m bench.engines --rounds 5

Prints every sample as it is taken, then medians and ratios to the peer of the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import machine, measure
from bench.images import Pusher, push_image
from bench.scenario import MIB
from bench.targets import ORG, DockerRegistry, Target
from tests.support.server import EntrepotServer


def _entrepot(directory: Path, upstream_url: str, engine: str) -> EntrepotServer:
    org = {"name": ORG, "upstream": upstream_url, "staleness_seconds": 86_400, "max_stale_seconds": 7 * 86_400}
    return EntrepotServer(directory, [org], startup_timeout=90.0, server={"engine": engine})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engines")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--blob-mib", type=float, default=100)
    p.add_argument("--blob-seconds", type=float, default=3)
    p.add_argument("--wrk-seconds", type=float, default=5)
    o = p.parse_args(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="entrepot-engines-"))
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        with ExitStack() as stack:
            storage = work / "upstream-storage"
            direct = stack.enter_context(DockerRegistry(work / "up-direct", storage, access_log=False))
            pusher = Pusher(direct.url)
            stack.callback(pusher.close)
            peer = stack.enter_context(DockerRegistry(work / "peer", work / "peer" / "storage", access_log=False,
                                                proxy=direct.url))
            targets = [Target("peer", peer.url, pid=peer.pid)]
            for engine in ("uvicorn", "granian"):
                server = stack.enter_context(_entrepot(work / engine, direct.url, engine))
                targets.append(Target(engine, server.url, f"{ORG}/", server.process.pid))
            small = push_image(pusher, work, "bench/small", "v1", [64 * 1024] * 5)
            large = push_image(pusher, work, "bench/large", "v1", [int(o.blob_mib * MIB)])
            blob = large.largest_layer
            for t in targets:
                for image in (small, large):
                    measure.cold_pull(t, image, 1)
                measure.wrk(t.manifest_url(small.repository, small.tag), 1)
            say(f"warm: {', '.join(t.name for t in targets)}; load {machine.load()}")

            def record(name: str, t: Target, value: float) -> None:
                samples.setdefault(name, {}).setdefault(t.name, []).append(value)
                say(f"{name:<16} {t.name:<8} {value:10,.1f}")

            for number in range(o.rounds):
                order = targets[number % len(targets):] + targets[:number % len(targets)]
                for streams in (1, 4):
                    for t in order:
                        machine.wait_idle([x.pid for x in targets])
                        result = measure.blob_throughput(t.blob_url(large.repository, blob.digest), blob.size,
                                                         streams, o.blob_seconds)
                        record(f"blob_{streams}_mib_s", t, result["mib_s"])
                for t in order:
                    machine.wait_idle([x.pid for x in targets])
                    result = measure.wrk(t.manifest_url(small.repository, small.tag), o.wrk_seconds)
                    record("tag_rps", t, result["rps"])
                    record("tag_p99_ms", t, result["p99_ms"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {o.rounds} rounds (load now {machine.load()}):")
    for name, by_target in samples.items():
        m = {k: statistics.median(v) for k, v in by_target.items()}
        print(f"{name:<14} " + "  ".join(f"{k} {v:,.1f} ({v / m['peer']:.2f}x peer)" for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
