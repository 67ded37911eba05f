"""A large site's history for bench.scale: orgs, images with shared layers, tag moves, Zipf-popular pulls.

Everything goes through the applications' own write path (CacheRecords.save and Pulls.record, many
events per transaction as the group commit writes them), never SQL into the views: the views are then
built by the projections' own rebuild, as an operator would. The build is resumable: `progress.json`
in the data directory says how far it got, and a run with the same shape continues from there.
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from eventsourcing.persistence import InterfaceError, InternalError, OperationalError

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


@functools.lru_cache(maxsize=65_536)   # Zipf: the hot images come back again and again
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


def registry_changes(shape: Shape, start: int, stop: int, cached_at: Callable[[int], float],
                     seen_blobs: set[tuple[str, str]]) -> list:
    """The aggregates images start..stop-1 create: manifest, blobs new to their org, version tag, `latest`."""
    changes: list = []
    for i in range(start, stop):
        im = image(shape, i)
        at = cached_at(i)
        changes.append(CachedManifest(org=im.org, repository=im.repository, digest=im.digest, media_type=MANIFEST,
                                      size=900, blobs=[d for d, _ in im.blobs], children=[], cached_at=at,
                                      subject="", artifact_type="", annotations={}, sizes=dict(im.blobs)))
        for digest, size in im.blobs:
            if (im.org, digest) not in seen_blobs:
                seen_blobs.add((im.org, digest))
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


def pulls(shape: Shape, start: int, stop: int, popularity: Popularity, end: float) -> Iterator[Pull]:
    """Pulls start..stop-1 in time order over `days` up to `end`; the same batch gives the same pulls."""
    step = shape.days * DAY / shape.pulls
    results = [name for name, share in RESULTS for _ in range(round(share * 1000))]
    rng = random.Random(shape.seed * 7_919 + start)
    for n in range(start, stop):
        im = image(shape, popularity.pick(rng.random()))
        result = results[rng.randrange(len(results))]
        client = rng.randrange(shape.clients)
        by_tag = rng.random() < 0.8
        robot = client % 5 == 0
        yield Pull(org=im.org, repository=im.repository, reference=im.tag if by_tag else im.digest,
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


def record_batch(pull_log: Pulls, batch: Callable[[], Iterator[Pull]], say: Callable[[str], None]) -> None:
    """One transaction of pulls, written again if the server ended it: on a machine loaded enough to
    deschedule this writer for 5 s, the server's idle-in-transaction bound rolls the batch back."""
    for attempt in range(5):
        try:
            pull_log.record(*batch())   # the same pulls again: a batch is a function of its first number
            return
        except (InternalError, OperationalError, InterfaceError) as error:
            say(f"  batch rolled back ({error}); writing it again")
            time.sleep(1 + attempt)
    pull_log.record(*batch())


def write_history(env: dict, shape: Shape, progress: Progress, say: Callable[[str], None],
                  image_batch: int = 200, pull_batch: int = 1000) -> dict:
    """Write (or finish writing) the history; returns seconds and events/s of each part written now."""
    figures: dict = {}
    records, pull_log = CacheRecords(env=env), Pulls(env=env)
    try:
        if not progress["orgs"]:
            for o in range(shape.orgs):
                records.apply_org(org_name(o), {"upstream": f"https://registry-{o}.example.com",
                                                "staleness_seconds": 86_400})
            progress.save(orgs=True)
        end, span = progress["end"], shape.days * DAY
        cached_at = lambda i: end - span + i * (span / 2) / shape.images   # noqa: E731 - first half of the span
        if progress["images"] < shape.images:
            seen = {(im.org, d) for i in range(progress["images"]) for im in [image(shape, i)] for d, _ in im.blobs}
            started, events = time.perf_counter(), 0
            for start in range(progress["images"], shape.images, image_batch):
                stop = min(start + image_batch, shape.images)
                changes = registry_changes(shape, start, stop, cached_at, seen)
                events += sum(len(aggregate.pending_events) for aggregate in changes)
                records.save(*changes)
                progress.save(images=stop)
                if stop % 20_000 < image_batch:
                    say(f"  images {stop:,}/{shape.images:,} ({events / (time.perf_counter() - started):,.0f} events/s)")
            seconds = time.perf_counter() - started
            figures["registry"] = {"events": events, "seconds": round(seconds, 1), "events_per_s": round(events / seconds)}
        # A batch is one transaction, so the pulls stored are whole batches: resume after the last one.
        first = pull_log.recorder.max_notification_id() or 0
        if first < shape.pulls:
            popularity = Popularity(shape)
            started = time.perf_counter()
            for start in range(first, shape.pulls, pull_batch):
                stop = min(start + pull_batch, shape.pulls)
                record_batch(pull_log, lambda: pulls(shape, start, stop, popularity, end), say)
                if stop % 100_000 < pull_batch or stop == shape.pulls:
                    progress.save(pulls=stop)
                    rate = (stop - first) / (time.perf_counter() - started)
                    say(f"  pulls {stop:,}/{shape.pulls:,} ({rate:,.0f}/s)")
            progress.save(pulls=shape.pulls)
            seconds = time.perf_counter() - started
            figures["pulls"] = {"events": shape.pulls - first, "seconds": round(seconds, 1),
                                "events_per_s": round((shape.pulls - first) / seconds)}
    finally:
        records.close()
        pull_log.close()
    return figures
