"""`python -m bench.warm_loop`: the event loop's CPU per warm pull, measured in-process, direct route against routed.

    .venv/bin/python -m bench.warm_loop tag --batches 10 --requests 2000
    .venv/bin/python -m bench.warm_loop digest --no-pull-views     # the views that follow Pulls stopped

No HTTP server and no client: `entrepot`'s app (as `serve` wraps it) gets raw ASGI calls, 32 at a
time, for a warm manifest by tag or digest or a small blob of an image in a local `docker-registry`.
Batches alternate between manifests and blobs answered past Litestar's router
(interfaces/http/pull_route.py) and through it, in one process, so both see the same machine. Each
batch gives requests/s and the CPU time of the event loop's thread per request
(`time.thread_time`: the writer thread and the views' threads are not in it). Also prints how long
the group commit waited to gather each batch and to write it (medians). On a shared machine the
CPU figure moves much less than requests/s; `--no-pull-views` stops the projection workers that
follow `Pulls`, which otherwise compete for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench.images import Pusher, push_image
from bench.targets import ORG, DockerRegistry
from infra.settings import load_settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from interfaces.http.forwarded import with_forwarded_client
from tests.support.server import render_config

CONCURRENCY = 32
HEADERS = [(b"host", b"127.0.0.1:5000"), (b"user-agent", b"bench.warm_loop"),
           (b"accept", b"application/vnd.docker.distribution.manifest.v2+json")]


async def call(app, path: str) -> int:
    """One GET as granian hands it over (pathsend offered); the status answered."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": HEADERS, "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 5000),
             "extensions": {"http.response.pathsend": {}}}
    messages: list[dict] = []
    answered = asyncio.Event()
    asked = False

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()   # a streamed body listens for the client leaving: it leaves once answered
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)
        if message["type"] != "http.response.start" and not message.get("more_body"):
            answered.set()
    await app(scope, receive, send)
    return messages[0]["status"]


class Phases:
    """How long the group commit gathered each batch and how long it wrote it (its own methods, timed)."""

    def __init__(self, group) -> None:
        self.gather: list[float] = []
        self.write: list[float] = []
        gather, store = group._next_batch, group._store

        async def timed_gather():
            started = time.perf_counter()
            batch = await gather()
            self.gather.append(time.perf_counter() - started)
            return batch

        async def timed_store(entries, write_timeout):
            started = time.perf_counter()
            await store(entries, write_timeout)
            self.write.append(time.perf_counter() - started)
        group._next_batch, group._store = timed_gather, timed_store

    def summary(self) -> str:
        def ms(values: list[float]) -> str:
            return f"{1000 * statistics.median(values):.1f} ms" if values else "-"
        return f"group commit: gathering a batch {ms(self.gather)}, writing it {ms(self.write)} (medians)"


async def measure(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="entrepot-warm-loop-"))
    try:
        await _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _measure(args: argparse.Namespace, work: Path) -> None:
    with DockerRegistry(work / "up", work / "storage", access_log=False) as upstream:
        pusher = Pusher(upstream.url)
        image = push_image(pusher, work, "bench/loop", "v1", [64 * 1024] * 5)
        pusher.close()
        org = {"name": ORG, "upstream": upstream.url, "staleness_seconds": 86_400, "max_stale_seconds": 7 * 86_400}
        (work / "entrepot.toml").write_text(render_config("127.0.0.1", 0, work / "data", [org]))
        settings = load_settings(work / "entrepot.toml")
        container = bootstrap(settings)
        litestar = create_app(container)
        app = with_forwarded_client(litestar, settings.trusted_proxies)
        lifespan_in: asyncio.Queue = asyncio.Queue()
        started, stopped = asyncio.Event(), asyncio.Event()

        async def lifespan_out(message: dict) -> None:
            (started if message["type"].startswith("lifespan.startup") else stopped).set()
        await lifespan_in.put({"type": "lifespan.startup"})
        lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                             lifespan_in.get, lifespan_out))
        await started.wait()
        repository = f"/v2/{ORG}/bench/loop"
        paths = {"tag": f"{repository}/manifests/{image.tag}",
                 "digest": f"{repository}/manifests/{image.manifest_digest}",
                 "blob": f"{repository}/blobs/{image.largest_layer.digest}"}
        for path in paths.values():   # cold once: every later pull is a hit
            if await call(app, path) != 200:
                raise SystemExit(f"bench.warm_loop: {path} was not answered 200")
        await asyncio.sleep(1)
        path = paths[args.kind]
        for _ in range(200):
            await call(app, path)
        if args.no_pull_views:
            runners = container.runners
            for key, worker in list(runners._workers.items()):
                if key[1] == "Pulls":
                    worker.stop()
                    del runners._workers[key]
        phases = Phases(container.group_commit)
        direct = litestar.direct_pulls

        async def batch() -> tuple[float, float]:
            async def client(n: int) -> None:
                for _ in range(n):
                    await call(app, path)
            started_at, cpu = time.perf_counter(), time.thread_time()
            await asyncio.gather(*(client(args.requests // CONCURRENCY) for _ in range(CONCURRENCY)))
            done = args.requests // CONCURRENCY * CONCURRENCY
            return done / (time.perf_counter() - started_at), 1e6 * (time.thread_time() - cpu) / done

        samples: dict[str, list[tuple[float, float]]] = {"direct": [], "routed": []}
        for number in range(args.batches):
            for side in ("direct", "routed") if number % 2 == 0 else ("routed", "direct"):
                litestar.direct_pulls = direct if side == "direct" else None
                samples[side].append(await batch())
        litestar.direct_pulls = direct
        for side, values in samples.items():
            print(f"{args.kind:6s} {side:6s}  {statistics.median(v[0] for v in values):8,.0f} req/s   "
                  f"event loop {statistics.median(v[1] for v in values):6.1f} µs CPU/request  "
                  f"(medians of {len(values)} batches of {args.requests})")
        print(phases.summary())
        print(f"load {machine.load()}")
        await lifespan_in.put({"type": "lifespan.shutdown"})
        await lifespan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warm_loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("tag", "digest", "blob"), nargs="?", default="tag")
    p.add_argument("--batches", type=int, default=10, help="batches per route (default 10)")
    p.add_argument("--requests", type=int, default=2000, help="requests per batch (default 2000)")
    p.add_argument("--no-pull-views", action="store_true", help="stop the projection workers that follow Pulls")
    asyncio.run(measure(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
