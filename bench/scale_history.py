"""A large site's history for bench.scale: orgs, images with shared layers, tag moves, Zipf-popular pulls.

Everything goes through the applications' own write path, never SQL into the views: the events
CacheRecords.save and the group commit (Pulls.write) would store, made by worker processes and mapped
by the applications' own mappers, inserted in order by the applications' recorders, many events per
transaction (write_history). The views are then built by the projections' own rebuild, as an operator would. The build is resumable: `progress.json`
in the data directory says how far it got, and a run with the same shape continues from there.
"""

from __future__ import annotations

import bisect
import functools
import json
import multiprocessing
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, InterfaceError, InternalError, OperationalError, StoredEvent

from application.cache_records import CacheRecords
from application.pulls import Pulls
from domain.cache import CachedBlob, CachedManifest, TagResolution
from domain.pull import Pull

DAY = 86400
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BASES = 300                   # distinct base images (3 layers each) that app images build on
# Pull results as a busy cache sees them: mostly hits, some revalidations after staleness, a few misses.
RESULTS = (("hit", 0.90), ("revalidated", 0.05), ("miss", 0.03), ("stale", 0.01), ("error", 0.005),
           ("denied", 0.005))
AGENTS = ("containerd/1.7.20", "containerd/2.0.1", "cri-o/1.30.2 os/linux arch/amd64",
          "docker/27.1.1 go/go1.22.5 git-commit/cc13f95 kernel/6.8.0 os/linux arch/amd64",
          "skopeo/1.13.3", "podman/4.9.4")


@dataclass(frozen=True)
class Shape:
    """What the history holds; the same shape gives the same events (a fixed seed)."""

    orgs: int = 36
    images: int = 200_000
    pulls: int = 10_000_000
    clients: int = 300
    days: int = 365
    tag_moves: float = 0.25       # moves of `latest` per image
    zipf: float = 1.1              # popularity exponent: a few images take most pulls
    seed: int = 16


@dataclass(frozen=True)
class Image:
    org: str
    repository: str
    tag: str
    digest: str
    blobs: tuple[tuple[str, int], ...]   # (digest, size): config first, then layers


def org_name(number: int) -> str:
    return f"team{number:02d}"


# Every image stays computed (200k: ~250 MB): a miss reseeds a Random, a quarter of a pull's cost when
# the cache held 65,536. Filled in the parent before the workers fork, so they start with all of it.
@functools.lru_cache(maxsize=None)
def image(shape: Shape, i: int) -> Image:
    """Image i, computed (not stored): 4 versions per repository, 2 base layers shared across the site."""
    rng = random.Random(shape.seed * 1_000_003 + i)
    repository_number = i // 4
    org = org_name(repository_number % shape.orgs)
    base = rng.randrange(BASES)
    blobs = [(f"sha256:{i:016x}{'c' * 48}", 2_000 + rng.randrange(8_000))]            # config
    blobs += [(f"sha256:{base:016x}{layer:016x}{'b' * 32}", 10_000_000 + base * 100_000 + layer)
              for layer in range(2)]                                                # shared base layers
    blobs += [(f"sha256:{i:016x}{layer:016x}{'a' * 32}", rng.randrange(1_000_000, 60_000_000))
              for layer in range(2)]                                                # the app's own
    return Image(org, f"apps/service{repository_number}", f"v{i % 4}", f"sha256:{i:016x}{'d' * 48}", tuple(blobs))


def first_uses(shape: Shape) -> dict[tuple[str, str], int]:
    """The first image of each org to use each shared base layer: that image caches the blob for its org.
    Config and app layers are an image's own. Known up front, any batch of images is written on its own
    (by a worker, or after a resume) and still records each org's blob exactly once, where a sequential
    pass would have."""
    first: dict[tuple[str, str], int] = {}
    for i in range(shape.images):
        im = image(shape, i)
        for digest, _ in im.blobs[1:3]:
            first.setdefault((im.org, digest), i)
    return first


def registry_changes(shape: Shape, start: int, stop: int, cached_at: Callable[[int], float],
                     first_use: dict[tuple[str, str], int]) -> list:
    """The aggregates images start..stop-1 create: manifest, blobs new to their org, version tag, `latest`."""
    changes: list = []
    for i in range(start, stop):
        im = image(shape, i)
        at = cached_at(i)
        changes.append(CachedManifest(org=im.org, repository=im.repository, digest=im.digest, media_type=MANIFEST,
                                      size=900, blobs=[d for d, _ in im.blobs], children=[], cached_at=at,
                                      subject="", artifact_type="", annotations={}, sizes=dict(im.blobs)))
        for digest, size in im.blobs:
            if first_use.get((im.org, digest), i) == i:
                changes.append(CachedBlob(org=im.org, repository=im.repository, digest=digest, size=size,
                                          cached_at=at))
        changes.append(TagResolution(org=im.org, repository=im.repository, tag=im.tag, digest=im.digest,
                                     media_type=MANIFEST, checked_at=at))
        if i % 4 == 3:   # the repository's `latest` followed its versions: resolved, then moved
            first = image(shape, i - 3)
            latest = TagResolution(org=im.org, repository=im.repository, tag="latest", digest=first.digest,
                                   media_type=MANIFEST, checked_at=at)
            moves = round(4 * shape.tag_moves)
            for step in range(1, moves + 1):
                latest.observe(image(shape, i - 3 + step % 4).digest, MANIFEST, at + step)
            changes.append(latest)
    return changes


class Popularity:
    """Zipf over the images: rank r is pulled in proportion to 1/r^s (ranks shuffled over image numbers)."""

    def __init__(self, shape: Shape) -> None:
        weights = [1 / (rank ** shape.zipf) for rank in range(1, shape.images + 1)]
        total, running, self.cumulative = sum(weights), 0.0, []
        for weight in weights:
            running += weight / total
            self.cumulative.append(running)
        self.order = list(range(shape.images))
        random.Random(shape.seed).shuffle(self.order)

    def pick(self, u: float) -> int:
        return self.order[min(bisect.bisect_left(self.cumulative, u), len(self.order) - 1)]


def pulls(shape: Shape, start: int, stop: int, popularity: Popularity, end: float) -> Iterator[Pull.Recorded]:
    """Pulls start..stop-1 in time order over `days` up to `end`; the same batch gives the same pulls.
    Each is the event the request path records (`Pull.recorded`, the group commit's factory)."""
    step = shape.days * DAY / shape.pulls
    results = [name for name, share in RESULTS for _ in range(round(share * 1000))]
    rng = random.Random(shape.seed * 7_919 + start)
    for n in range(start, stop):
        im = image(shape, popularity.pick(rng.random()))
        result = results[rng.randrange(len(results))]
        client = rng.randrange(shape.clients)
        by_tag = rng.random() < 0.8
        robot = client % 5 == 0
        yield Pull.recorded(org=im.org, repository=im.repository, reference=im.tag if by_tag else im.digest,
                            digest="" if result in ("error", "denied") else im.digest, result=result,
                            client=f"10.{client // 65536 % 256}.{client // 256 % 256}.{client % 256}",
                            user_agent=AGENTS[client % len(AGENTS)], at=end - shape.days * DAY + n * step,
                            status={"error": 502, "denied": 403}.get(result, 200),
                            error_code={"error": "UNKNOWN", "denied": "DENIED"}.get(result, ""),
                            note="upstream timed out" if result in ("stale", "error") else "",
                            actor=f"{im.org}+ci" if robot else "anonymous")


class Progress:
    """progress.json: the shape and how far each part got; a different shape is refused, not mixed."""

    def __init__(self, path: Path, shape: Shape) -> None:
        self.path, self.shape = path, shape
        self.state = {"shape": asdict(shape), "orgs": False, "images": 0, "pulls": 0, "end": time.time() // 60 * 60}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored["shape"] != asdict(shape):
                raise SystemExit(f"{path} holds a history of another shape ({stored['shape']}); "
                                 "use another --data or remove it")
            self.state = stored

    def save(self, **changes) -> None:
        self.state.update(changes)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.path)

    def __getitem__(self, key: str):
        return self.state[key]


def insert_batch(app: Application, stored: list, say: Callable[[str], None], resumed: bool = False) -> None:
    """One transaction, written again if the server ended it: on a machine loaded enough to deschedule
    this writer for 5 s, the server's idle-in-transaction bound rolls the batch back. The first batch
    of a resumed build may be in already (stopped between its commit and progress.json): a batch is
    one transaction, so a duplicate means all of it is, and it is skipped."""
    for attempt in range(5):
        try:
            app.recorder.insert_events(stored)
            return
        except IntegrityError:
            if not resumed:
                raise
            say("  the first batch after the resume was stored already; skipped")
            return
        except (InternalError, OperationalError, InterfaceError) as error:
            say(f"  batch rolled back ({error}); writing it again")
            time.sleep(1 + attempt)
    app.recorder.insert_events(stored)


# What the mapping workers use: set in the parent before the fork, inherited by the children.
_WORK: dict = {}


def _stored_batch(part: str, start: int, stop: int) -> tuple[int, list[StoredEvent]]:
    """A worker's share: the events of images or pulls start..stop-1, mapped by the application's own
    mapper to the rows its recorder inserts (what Application.save and Pulls.write do before inserting)."""
    shape, end = _WORK["shape"], _WORK["end"]
    if part == "registry":
        span = shape.days * DAY
        changes = registry_changes(shape, start, stop, lambda i: end - span + i * (span / 2) / shape.images,
                                   _WORK["first_use"])
        events = [event for aggregate in changes for event in aggregate.collect_events()]
        mapper = _WORK["records"].mapper
    else:
        events = list(pulls(shape, start, stop, _WORK["popularity"], end))
        mapper = _WORK["pull_log"].mapper
    return stop, [mapper.to_stored_event(event) for event in events]


def _pipelined(pool, part: str, ranges: list[tuple[int, int]], depth: int) -> Iterator[tuple[int, list]]:
    """The workers' batches in order, at most `depth` ahead of the writer (memory stays bounded)."""
    pending: deque = deque()
    for start, stop in ranges:
        pending.append(pool.apply_async(_stored_batch, (part, start, stop)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def write_history(env: dict, shape: Shape, progress: Progress, say: Callable[[str], None],
                  image_batch: int = 1000, pull_batch: int = 5000, workers: int = 2) -> dict:
    """Write (or finish writing) the history; returns seconds and events/s of each part written now.

    `workers` processes build the events and map them with the applications' mappers while this one
    inserts each batch, in order, through the applications' recorders in one transaction: the write
    path of Application.save and of the group commit (Pulls.write), pipelined over the cores. One
    writer keeps the logs in time order, as the server writes them."""
    figures: dict = {}
    records, pull_log = CacheRecords(env=env), Pulls(env=env)
    try:
        if not progress["orgs"]:
            for o in range(shape.orgs):
                records.apply_org(org_name(o), {"upstream": f"https://registry-{o}.example.com",
                                                "staleness_seconds": 86_400})
            progress.save(orgs=True)
        end = progress["end"]
        # A batch is one transaction, so the pulls stored are whole batches: resume after the last one.
        first_pull = pull_log.recorder.max_notification_id() or 0
        if progress["images"] >= shape.images and first_pull >= shape.pulls:
            return figures
        _WORK.update(shape=shape, end=end, records=records, pull_log=pull_log,
                     first_use=first_uses(shape) if progress["images"] < shape.images else {},
                     popularity=Popularity(shape))
        for i in range(shape.images):   # computed once here, inherited by the workers
            image(shape, i)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            if progress["images"] < shape.images:
                started, events = time.perf_counter(), 0
                ranges = [(start, min(start + image_batch, shape.images))
                          for start in range(progress["images"], shape.images, image_batch)]
                for stop, stored in _pipelined(pool, "registry", ranges, 2 * workers):
                    insert_batch(records, stored, say, resumed=stop == ranges[0][1] and progress["images"] > 0)
                    events += len(stored)
                    progress.save(images=stop)
                    if stop % 20_000 < image_batch:
                        say(f"  images {stop:,}/{shape.images:,} ({events / (time.perf_counter() - started):,.0f} events/s)")
                seconds = time.perf_counter() - started
                figures["registry"] = {"events": events, "seconds": round(seconds, 1),
                                       "events_per_s": round(events / seconds)}
            if first_pull < shape.pulls:
                started = time.perf_counter()
                ranges = [(start, min(start + pull_batch, shape.pulls))
                          for start in range(first_pull, shape.pulls, pull_batch)]
                for stop, stored in _pipelined(pool, "pulls", ranges, 2 * workers):
                    insert_batch(pull_log, stored, say)
                    if stop % 100_000 < pull_batch or stop == shape.pulls:
                        progress.save(pulls=stop)
                        rate = (stop - first_pull) / (time.perf_counter() - started)
                        say(f"  pulls {stop:,}/{shape.pulls:,} ({rate:,.0f}/s, load {os.getloadavg()[0]:.1f})")
                progress.save(pulls=shape.pulls)
                seconds = time.perf_counter() - started
                figures["pulls"] = {"events": shape.pulls - first_pull, "seconds": round(seconds, 1),
                                    "events_per_s": round((shape.pulls - first_pull) / seconds)}
    finally:
        _WORK.clear()
        records.close()
        pull_log.close()
    return figures
