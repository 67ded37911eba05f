"""`python -m bench.profile`: py-spy samples of Entrepôt under one load: warm (manifest by tag/digest, a blob,
a small blob) or cold (one client pulling never-pulled images one after another, as bench/cold.py does).

Starts an upstream registry and `entrepot serve` (embedded), warms one image, runs the load while
`py-spy record` samples the server, then prints the functions with the most samples (own and
inclusive). Needs py-spy in the venv (`.venv/bin/pip install py-spy`); the collapsed stacks are kept
for flame graphs (e.g. https://www.speedscope.app).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import measure
from bench.images import Pusher, push_image
from bench.postgres import FreshDatabase
from bench.targets import ORG, AccessLog, DockerRegistry, Target, entrepot_server

PY_SPY = Path(sys.executable).with_name("py-spy")


def _load(kind: str, target: Target, image, seconds: float) -> None:
    if kind == "cold":   # `image` is the list of images pushed for it, pulled once each
        deadline = time.monotonic() + seconds
        for one in image:
            if time.monotonic() > deadline:
                return
            measure.cold_pull(target, one, 1)
        print("bench.profile: every pushed image was pulled before the time was up; raise --cold-images",
              file=sys.stderr)
    elif kind == "blob":
        layer = image.largest_layer
        measure.blob_throughput(target.blob_url(image.repository, layer.digest), layer.size, 1, seconds)
    elif kind == "small-blob":   # requests/s, as bench/ab.py measures a blob: wrk on a 64 KiB layer
        measure.wrk(target.blob_url(image.repository, image.largest_layer.digest), seconds)
    else:
        reference = image.tag if kind == "manifest-by-tag" else image.manifest_digest
        measure.wrk(target.manifest_url(image.repository, reference), seconds)


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: samples add up per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize(collapsed: Path, top: int = 25) -> str:
    """Own and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples", "", "own samples (where the CPU is):"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive samples (what it costs, callees included):"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("kind", choices=("manifest-by-tag", "manifest-by-digest", "blob", "small-blob", "cold"))
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--blob-mib", type=int, default=100)
    p.add_argument("--cold-images", type=int, default=40,
                   help="cold: multi-arch images of 6 x 4 MiB pushed beforehand (as bench/cold.py's), pulled once each")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--all-threads", action="store_true",
                   help="sample every running thread; default: only the thread holding the GIL (--gil), "
                        "which is what limits a one-process Python server")
    p.add_argument("--postgres", metavar="ADMIN_URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="profile Entrepôt on a fresh PostgreSQL database (created there, dropped afterwards)")
    p.add_argument("--output", type=Path, help="collapsed stacks (default: $TMPDIR/entrepot-profile-KIND.txt)")
    args = p.parse_args(argv)
    if not PY_SPY.exists():
        print(f"bench.profile: {PY_SPY} not found; install it with .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    output = args.output or Path(tempfile.gettempdir()) / f"entrepot-profile-{args.kind}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="entrepot-profile-"))
    database = FreshDatabase(args.postgres).create() if args.postgres else None
    try:
        with DockerRegistry(work / "up", work / "storage", access_log=True) as upstream, \
                entrepot_server(work / "entrepot", upstream.url, database.url if database else None) as server:
            pusher = Pusher(upstream.url)
            sizes = [args.blob_mib * 2**20] if args.kind == "blob" else [64 * 1024] * 5
            image = push_image(pusher, work, "bench/profiled", "v1", sizes)
            if args.kind == "cold":
                image = [push_image(pusher, work, f"bench/cold-{n}", "v1", [4 * 2**20] * 6, multi_arch=True)
                         for n in range(args.cold_images)]
            pusher.close()
            target = Target("entrepot", server.url, f"{ORG}/", server.process.pid, AccessLog(upstream))
            if args.kind != "cold":
                measure.cold_pull(target, image, 1)   # warm: the rest are hits
                _load(args.kind, target, image, 1)
            load = threading.Thread(target=_load, args=(args.kind, target, image, args.seconds + 2))
            load.start()
            subprocess.run([str(PY_SPY), "record", "--pid", str(target.pid), "--duration", str(int(args.seconds)),
                            "--rate", str(args.rate), "--format", "raw", "--nonblocking", "--output", str(output)]
                           + ([] if args.all_threads else ["--gil"]),
                           check=True, capture_output=True)
            load.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if database:
            database.drop()
    print(summarize(output))
    print(f"\ncollapsed stacks: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
