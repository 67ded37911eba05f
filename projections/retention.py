"""The retention view: what each org's cached images hold, how they rank for eviction, and blobs to delete.

Tables (one SQL text for both backends, see projections/retention_sql.py):
- `images (org, repository, digest)`: a cached image (a manifest or index that is not a child of
  another) with its bytes (distinct members with a known size), last use, pull count, LFU score,
  pinned. A Pull may land before the image's Cached (two runners): the row then waits, `held = 0`.
- `members (org, repository, image, digest)`: every digest an image references: its manifest,
  its children, their config and layers. Usage and "referenced by anyone" are queries on it.
- `children`: which index a child manifest belongs to, so that a child cached later joins it.
- `sizes (digest)`: the bytes of every digest ever stored (blobs and manifests, all orgs).
- `image_tags`: tag -> digest, to name what an eviction takes with it.
- `orphans (digest)`: stored digests no image references since `since`; `state` is `deleting`
  once StoredBlob.Orphaned is recorded (deletion under way; a restart finishes it).
- `retention_log`: evictions, flushes and pins in the order recorded (the audit API's list), each with
  the generation of the org (domain.org.CacheOrg.Recreated) it happened to.
- `eviction_totals (org, generation, reason)`: count and bytes.
- `org_usage (org)`: the bytes of the distinct digests the org's images reference (its usage, kept as members
  and sizes come and go, so that `org show` and the evictor read one row); the row of org '' is the whole
  cache's (no org has that name).
- `retention_generations (org, generation)`: each org's generation at this point of Registry's log (from
  CacheOrg.Registered/Recreated). Evictions, flushes and pins are Registry events too, so the generation
  they get is the one current when they were recorded, whatever the replay.
Pull updates only touch the stats columns and commute with the rest.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking

from domain.cache import CachedBlob, CachedManifest, TagResolution
from domain.org import CacheOrg
from domain.pull import Pull
from domain.retention import (ORDER_TIEBREAK, CacheFlush, Candidate, ImagePin, StoredBlob, add_weight,
                              eviction_order, pull_weight)
from projections.base import AGGREGATE_GATHERING_SCALE, REGISTRY_BOUNDED_GATHERING_SCALE, Batch, View
from projections.retention_gathering import GATHERED, RegistryGathering, fold

# What a page's pulls set on an images row already there (the new score is folded in Python). A row of an
# earlier org of the name (generation) starts again from these pulls: a new org inherits no pull counts.
PULL_STATS = ("last_used = CASE WHEN {images}.generation < excluded.generation THEN excluded.last_used "
              "ELSE {max}({images}.last_used, excluded.last_used) END, "
              "pull_count = CASE WHEN {images}.generation < excluded.generation THEN excluded.pull_count "
              "ELSE {images}.pull_count + excluded.pull_count END, provisional = 0, score = excluded.score, "
              "generation = {max}({images}.generation, excluded.generation)")
# What caching a manifest sets on its image's row already there (RetentionView._cached, and a gathering's rounds).
# A row left by an earlier org of the name (generation) starts again: nothing of its stats stays.
CACHED_STATS = ("media_type = excluded.media_type, held = 1, cached_at = excluded.cached_at, "
                "last_used = CASE WHEN {images}.generation < excluded.generation THEN excluded.last_used "
                "ELSE {max}({images}.last_used, excluded.last_used) END, "
                "score = CASE WHEN {images}.pull_count = 0 OR {images}.generation < excluded.generation "
                "THEN excluded.score ELSE {images}.score END, "
                "provisional = CASE WHEN {images}.pull_count = 0 OR {images}.generation < excluded.generation "
                "THEN 1 ELSE {images}.provisional END, "
                "pull_count = CASE WHEN {images}.generation < excluded.generation THEN 0 ELSE {images}.pull_count END, "
                "generation = {max}({images}.generation, excluded.generation)")
WHOLE_CACHE = ""      # org_usage's row of every org together: not an org name (domain.org.validate_org_name)
KEYS_PER_READ = 300   # images per SELECT ... IN (VALUES ...): three parameters each, well under SQLite's limit



class _Gathered:
    """A bulk rebuild's gathering: pulls per image (_gather_pull), and Registry events (defer_usage)."""

    __slots__ = ("pulls", "registry")

    def __init__(self) -> None:
        self.pulls: dict[tuple[str, str, str], list] = {}
        self.registry: RegistryGathering | None = None


class _Page:
    """What a page's events read once and share: each org's generation (dropped when the page changes it),
    and the indexes each of its manifests is a child of (None: read per manifest)."""

    __slots__ = ("generations", "parents")

    def __init__(self, parents: dict[tuple[str, str, str], list[str]] | None) -> None:
        self.generations: dict[str, int] = {}
        self.parents = parents


@dataclass(frozen=True)
class ImageRank:
    org: str
    repository: str
    digest: str
    media_type: str
    bytes: int
    last_used: float
    pull_count: int
    score: float
    pinned: bool
    tags: list[str]


@dataclass(frozen=True)
class RetentionEntry:
    id: int
    kind: str            # eviction | flush | pin | unpin
    org: str
    repository: str
    digest: str
    tags: str            # comma-separated
    bytes: int
    reason: str
    policy: str
    actor: str
    at: float
    dry_run: bool
    generation: int = 1  # which org of the name it happened to


class RetentionView(View):
    name = "retention"
    handles = (CachedManifest.Cached, CachedManifest.Recached, CachedManifest.Evicted, CachedBlob.Cached,
               TagResolution.Resolved, TagResolution.Retargeted, TagResolution.Dropped,
               ImagePin.Pinned, ImagePin.Repinned, ImagePin.Unpinned, CacheFlush.Flushed,
               StoredBlob.Orphaned, StoredBlob.Deleted, StoredBlob.Restored, Pull.Recorded,
               CacheOrg.Registered, CacheOrg.Recreated)
    follows = ("Registry", "Pulls")
    # A digest's images (sizes known late, orphans, usage) and an org's members of a digest (usage).
    written_through = ("retention_members_digest", "retention_members_org")

    # Two primitives per backend: run one statement of the shared SQL text in the page's
    # transaction (rows as tuples), and read outside of one.
    def run(self, c: Any, text: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    # True where a read in the page's transaction costs no round trip (SQLite): one read then spares the
    # statements it would make no-ops. PostgreSQL pipelines the statements instead (a read waits for the server).
    reads_are_local = False

    def read(self, text: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def add_pull_stats(self, c: Any, rows: list[tuple]) -> None:
        """Upsert (org, repository, digest, last_used, pulls, score, generation) rows, keys distinct: PULL_STATS
        on conflict."""
        raise NotImplementedError

    # -- writing ---------------------------------------------------------------------------------------
    # Pulls: their stats commute with the rest, and _count_pulls folds them in log order whatever the pages.
    # With the usage deferred (a bulk rebuild into a fresh PostgreSQL copy, defer_usage) also the Registry
    # events that only add (retention_gathering.GATHERED); the others are written page by page.
    gathers: tuple[type, ...] = (Pull.Recorded,)
    gathering_scale = REGISTRY_BOUNDED_GATHERING_SCALE   # a row per image or blob, not per pull (View.gathering_scale)
    gathering_scales = {"Registry": AGGREGATE_GATHERING_SCALE}   # that log's rows are per event (base.py)

    def gathering(self) -> _Gathered:
        return _Gathered()

    def gather(self, gathered: _Gathered, event: Any, tracking: Tracking) -> None:
        if type(event) is Pull.Recorded:
            _gather_pull(gathered.pulls, event)
        else:
            if gathered.registry is None:
                gathered.registry = RegistryGathering()
            gathered.registry.add(event)

    def write_gathered(self, c: Any, gathered: _Gathered) -> None:
        if gathered.registry is not None:
            self.write_registry(c, gathered.registry)
        self._count_pulls(c, gathered.pulls)

    def write_registry(self, c: Any, gathering: RegistryGathering) -> None:
        """Gathered Registry events (a bulk rebuild, the usage deferred) as a few statements per table: the rows
        their events' statements would leave (retention_gathering.fold), in that module's order."""
        folded = fold(gathering, self.rows_of_keys(c, "indexes of", gathering.manifest_keys()),
                      self.rows_of_keys(c, "members of", gathering.listed_children()))
        for round_ in folded.image_rounds:   # each round's keys distinct: an upsert touches a row once
            self.write_gathered_rows(c, "images", round_)
        tags = gathering.tags.items()
        for name, rows in (("generations", list(gathering.generations.items())),
                           ("sizes", list(folded.sizes.items())), ("members", list(folded.members)),
                           ("children", list(folded.children)), ("unorphaned", [(d,) for d in folded.unorphaned]),
                           ("orphaned", list(folded.orphaned.items())),
                           ("tagged", [(*key, digest) for key, digest in tags if digest is not None]),
                           ("untagged", [key for key, digest in tags if digest is None])):
            if rows:
                self.write_gathered_rows(c, name, rows)
        # As the events' statements would have noted them (defer_usage): settle_usage writes these orgs' rows.
        self._usage_orgs |= folded.usage_orgs
        self._whole_cache_used = self._whole_cache_used or bool(gathering.stored)

    def rows_of_keys(self, c: Any, read: str, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], list[str]]:
        """{key: ...} of what a gathering's fold reads of the view as it was before it: "indexes of" each manifest
        (the indexes listing it as a child), "members of" each child an index lists (its digests, as an image)."""
        raise NotImplementedError

    def write_gathered_rows(self, c: Any, table: str, rows: list[tuple]) -> None:
        """Write one kind of a gathering's folded rows (write_registry names them)."""
        raise NotImplementedError

    def process_page(self, c: Any, batch: Batch) -> None:
        # Fewer statements per page than per event, each step the same rows as event by event (issue 16: a
        # rebuild of 200k images ran ~17 statements an image, one round trip each on PostgreSQL): blobs stored
        # one after another are written together (_blobs_stored), the orgs' generations are read once a page,
        # and the indexes a page's manifests belong to are read at once when the page changes none.
        pulls: dict[tuple[str, str, str], list] = {}
        page = _Page(self._parents_of_page(c, batch))
        blobs: list = []
        for event, tracking in batch:
            if isinstance(event, Pull.Recorded):
                _gather_pull(pulls, event)
            elif isinstance(event, (CachedBlob.Cached, StoredBlob.Restored)):
                blobs.append(event)
            else:
                if blobs:
                    self._blobs_stored(c, blobs)
                    blobs = []
                self._apply(c, event, tracking, page)
        if blobs:
            self._blobs_stored(c, blobs)
        self._count_pulls(c, pulls)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        self._apply(c, event, tracking, _Page(None))

    def _apply(self, c: Any, event: Any, tracking: Tracking, page: _Page) -> None:
        if isinstance(event, Pull.Recorded):
            pulls: dict = {}
            _gather_pull(pulls, event)
            self._count_pulls(c, pulls)
        elif isinstance(event, (CachedManifest.Cached, CachedManifest.Recached)):
            self._cached(c, event, page)
        elif isinstance(event, CachedManifest.Evicted):
            if event.image == event.digest:   # children leave with their image's event
                self._evicted(c, event, tracking.notification_id, page)
        elif isinstance(event, (CachedBlob.Cached, StoredBlob.Restored)):
            self._blobs_stored(c, [event])
        elif isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            self.run(c, "INSERT INTO {image_tags} VALUES (?, ?, ?, ?) ON CONFLICT (org, repository, tag) "
                        "DO UPDATE SET digest = excluded.digest", (event.org, event.repository, event.tag, event.digest))
        elif isinstance(event, TagResolution.Dropped):
            self.run(c, "DELETE FROM {image_tags} WHERE org = ? AND repository = ? AND tag = ?",
                     (event.org, event.repository, event.tag))
        elif isinstance(event, (ImagePin.Pinned, ImagePin.Repinned, ImagePin.Unpinned)):
            self._pinned(c, event, tracking.notification_id, page)
        elif isinstance(event, CacheFlush.Flushed):
            self._log(c, tracking.notification_id, "flush", event.org, event.repository, "", event.tag, event.bytes,
                      "flush", "", event.actor, event.at, event.dry_run, page)
        elif isinstance(event, StoredBlob.Orphaned):
            self.run(c, "UPDATE {orphans} SET state = 'deleting' WHERE digest = ?", (event.digest,))
        elif isinstance(event, StoredBlob.Deleted):
            self.run(c, "DELETE FROM {orphans} WHERE digest = ? AND state = 'deleting'", (event.digest,))
        elif isinstance(event, (CacheOrg.Registered, CacheOrg.Recreated)):
            self.run(c, "INSERT INTO {retention_generations} VALUES (?, ?) ON CONFLICT (org) DO UPDATE SET "
                        "generation = {max}({retention_generations}.generation, excluded.generation)",
                     (event.name, getattr(event, "generation", 1)))
            page.generations.pop(event.name, None)   # read again when next needed

    def _parents_of_page(self, c: Any, batch: Batch) -> dict[tuple[str, str, str], list[str]] | None:
        """{(org, repository, manifest): the indexes listing it as a child} for every manifest the page caches,
        read in one statement a chunk; None when the page itself changes `children` (an index cached, an
        image evicted): then each manifest reads its own when its turn comes."""
        keys = []
        for event, _ in batch:
            if isinstance(event, CachedManifest.Evicted) or (
                    isinstance(event, (CachedManifest.Cached, CachedManifest.Recached)) and event.children):
                return None
            if isinstance(event, (CachedManifest.Cached, CachedManifest.Recached)):
                keys.append((event.org, event.repository, event.digest))
        parents: dict[tuple[str, str, str], list[str]] = {key: [] for key in keys}
        keys = list(parents)
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start:start + KEYS_PER_READ]
            for org, repository, child, image in self.run(
                    c, "SELECT p.org, p.repository, p.child, p.image FROM (VALUES " + ", ".join(["(?, ?, ?)"] * len(chunk))
                    + ") AS v {cross_join} {children} AS p ON p.org = v.column1 AND p.repository = v.column2 "
                    "AND p.child = v.column3", tuple(part for key in chunk for part in key)):
                parents[(org, repository, child)].append(image)
        return parents

    def _blobs_stored(self, c: Any, events: list) -> None:
        """Blobs stored (CachedBlob.Cached, StoredBlob.Restored), one after another in the log: their sizes
        (a digest's first counts), then the ones no image references are orphans since their first event.
        Together as one by one: these events change no member, so each sees the same references."""
        first: dict[str, tuple[int, float]] = {}
        for event in events:
            first.setdefault(event.digest, (event.size, event.cached_at if isinstance(event, CachedBlob.Cached)
                                            else event.at))
        self._sized_many(c, [(digest, size) for digest, (size, _) in first.items()])
        # Stored but referenced by no image (fetched by digest alone, or its image already evicted): it
        # would otherwise stay forever.
        rows = [(digest, at) for digest, (_, at) in first.items()]
        for start in range(0, len(rows), KEYS_PER_READ):
            chunk = rows[start:start + KEYS_PER_READ]
            self.run(c, "INSERT INTO {orphans} SELECT v.column1, v.column2, 'waiting' FROM (VALUES "
                        + ", ".join(["(CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION))"] * len(chunk))
                        + ") AS v WHERE NOT EXISTS (SELECT 1 FROM {members} m WHERE m.digest = v.column1) "
                        "ON CONFLICT DO NOTHING", tuple(part for row in chunk for part in row))

    def _cached(self, c: Any, e: Any, page: _Page) -> None:
        # Declared sizes: the image counts whole before its layers arrive.
        self._sized_many(c, [(e.digest, e.size), *(e.sizes or {}).items()])
        if page.parents is not None:
            parents = page.parents[(e.org, e.repository, e.digest)]
        else:
            parents = [parent for (parent,) in self.run(
                c, "SELECT image FROM {children} WHERE org = ? AND repository = ? AND child = ?",
                (e.org, e.repository, e.digest))]
        if parents:   # a platform manifest of a cached index: it belongs to that image
            for parent in parents:
                self._add_members(c, e.org, e.repository, parent, [e.digest, *e.blobs])
        else:
            # Caching it was a pull (a miss) whose Pull event may not be projected yet (another
            # runner): until one is, that pull counts provisionally, so LFU does not see a new image
            # as never pulled and evict it while it arrives.
            # A row left by an earlier org of the name (generation) starts again: nothing of its stats stays.
            self.run(c, "INSERT INTO {images} (org, repository, digest, media_type, held, cached_at, last_used, "
                        "score, provisional, generation) VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1, ?) "
                        "ON CONFLICT (org, repository, digest) DO UPDATE SET " + CACHED_STATS,
                     (e.org, e.repository, e.digest, e.media_type, e.cached_at, e.cached_at, pull_weight(e.cached_at),
                      self._generation(c, e.org, page)))
            self._add_members(c, e.org, e.repository, e.digest, [e.digest, *e.blobs, *e.children])
            for child in e.children:
                self.run(c, "INSERT INTO {children} VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (e.org, e.repository, child, e.digest))
                # A child pulled (and cached) before its index: its blobs now count for the index too.
                known = self.run(c, "SELECT digest FROM {members} WHERE org = ? AND repository = ? AND image = ?",
                                 (e.org, e.repository, child))
                self._add_members(c, e.org, e.repository, e.digest, [digest for (digest,) in known])
        referenced = list(dict.fromkeys([e.digest, *e.blobs, *e.children]))   # referenced again: not to delete
        for start in range(0, len(referenced), KEYS_PER_READ):
            chunk = referenced[start:start + KEYS_PER_READ]
            self.run(c, "DELETE FROM {orphans} WHERE digest IN (" + ", ".join(["?"] * len(chunk)) + ")", tuple(chunk))

    # -- usage left to the end of a bulk rebuild ---------------------------------------------------------
    # In a bulk rebuild from empty (drop_indexes ... restore_indexes: a PostgreSQL copy before it goes live, a
    # SQLite view cleared in place) nothing needs an image's bytes or an org's usage until the end, so they are
    # not kept up as members and sizes arrive (two CTEs per manifest whose NOT EXISTS probes were most of
    # retention's PostgreSQL time; a handful of statements per manifest on SQLite) but summed once from `members`
    # and `sizes` before the indexes are made (settle_usage): what keeping them up gives, as they are defined by
    # those two tables. A SQLite rebuild killed midway leaves its tracking past events whose usage was never
    # summed: the view's next opening finds the indexes a bulk rebuild drops missing and sums it then
    # (SqliteRetentionView.create_table); a PostgreSQL copy killed midway is never made live.
    usage_deferred = False

    def defer_usage(self) -> None:
        self.usage_deferred = True
        self.gathers = (Pull.Recorded, *GATHERED)   # the Registry events that only add, gathered too
        self._usage_orgs: set[str] = set()   # the orgs whose usage rows keeping it up would have made
        self._whole_cache_used = False       # ... and the whole cache's

    def settle_usage(self, c: Any) -> None:
        """The images' bytes and the usage rows as keeping them up would have left them; usage kept up again."""
        self._sum_usage(c, sorted(self._usage_orgs) + ([WHOLE_CACHE] if self._whole_cache_used else []))
        self.usage_deferred = False
        self.gathers = type(self).gathers

    def settle_killed_rebuild(self, c: Any) -> None:
        """settle_usage for a bulk rebuild killed midway, whose noted orgs died with it: the orgs that had a member
        are those with one now and those with an image evicted (members leave only with their image)."""
        scopes = [org for (org,) in self.run(c, "SELECT org FROM {members} UNION SELECT org FROM {retention_log} "
                                                "WHERE kind = 'eviction' ORDER BY 1")]
        if self.run(c, "SELECT 1 FROM {sizes} UNION ALL SELECT 1 FROM {members} LIMIT 1"):
            scopes.append(WHOLE_CACHE)
        self._sum_usage(c, scopes)

    def _sum_usage(self, c: Any, scopes: list[str]) -> None:
        """Every image's bytes and the usage rows of `scopes` (orgs, WHOLE_CACHE) from `members` and `sizes`."""
        self.run(c, "UPDATE {images} SET bytes = t.total FROM (SELECT m.org, m.repository, m.image, sum(s.size) AS total "
                    "FROM {members} m JOIN {sizes} s ON s.digest = m.digest GROUP BY m.org, m.repository, m.image) t "
                    "WHERE {images}.org = t.org AND {images}.repository = t.repository AND {images}.digest = t.image")
        # A row for every org that had a member (kept up, it stays at 0 once its images are gone), then the sums;
        # rows already there start again from 0 (the usage of a rebuild killed midway, summed since by an opening).
        self.run(c, "UPDATE {org_usage} SET bytes = 0")
        for start in range(0, len(scopes), KEYS_PER_READ):
            chunk = scopes[start:start + KEYS_PER_READ]
            self.run(c, "INSERT INTO {org_usage} VALUES " + ", ".join(["(?, 0)"] * len(chunk)) + " ON CONFLICT DO NOTHING",
                     tuple(chunk))
        self.run(c, "UPDATE {org_usage} SET bytes = t.total FROM (SELECT d.org, sum(s.size) AS total FROM (SELECT DISTINCT "
                    "org, digest FROM {members}) d JOIN {sizes} s ON s.digest = d.digest GROUP BY d.org) t "
                    "WHERE {org_usage}.org = t.org")
        self.run(c, "UPDATE {org_usage} SET bytes = (SELECT coalesce(sum(s.size), 0) FROM {sizes} s WHERE EXISTS "
                    "(SELECT 1 FROM {members} m WHERE m.digest = s.digest)) WHERE org = ?", (WHOLE_CACHE,))

    def _add_members(self, c: Any, org: str, repository: str, image: str, digests: list[str]) -> None:
        # Two statements for all the digests (a rebuild on PostgreSQL was mostly these round trips): the
        # members not there yet, then the image grows by the sum of their known sizes.
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), KEYS_PER_READ):   # chunks: under the databases' parameter limits
            chunk = unique[start:start + KEYS_PER_READ]
            if self.usage_deferred:
                self._usage_orgs.add(org)
                self._whole_cache_used = True
                self.run(c, "INSERT INTO {members} VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                         + " ON CONFLICT DO NOTHING", tuple(part for digest in chunk for part in (org, repository, image, digest)))
            else:
                self._add_member_chunk(c, org, repository, image, chunk)

    def _add_member_chunk(self, c: Any, org: str, repository: str, image: str, digests: list[str]) -> None:
        added = self.run(c, "INSERT INTO {members} VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(digests))
                         + " ON CONFLICT DO NOTHING RETURNING digest",
                         tuple(part for digest in digests for part in (org, repository, image, digest)))
        if added:
            new = tuple(digest for (digest,) in added)
            marks = ", ".join(["?"] * len(new))
            self.run(c, f"UPDATE {{images}} SET bytes = bytes + coalesce((SELECT SUM(size) FROM {{sizes}} WHERE digest IN ("
                        f"{marks})), 0) WHERE org = ? AND repository = ? AND digest = ?", (*new, org, repository, image))
            # A digest counts in a usage when its first member row there arrives: no other image lists it.
            # NOT EXISTS stops at the first other row (a shared base layer has thousands; a count read them all).
            # {members_by_org}: members as m. SQLite's planner took the covering primary key (org only: every member of the org,
            # per digest; 1,000 images of one org: 10 s of a rebuild) over (org, digest); PostgreSQL plans it well.
            self._add_usage(c, org, f"SELECT coalesce(sum(s.size), 0) FROM {{sizes}} s WHERE s.digest IN ({marks}) "
                            "AND NOT EXISTS (SELECT 1 FROM {members_by_org} WHERE m.org = ? AND m.digest = s.digest "
                            "AND (m.repository <> ? OR m.image <> ?))", (*new, org, repository, image))
            self._add_usage(c, WHOLE_CACHE, f"SELECT coalesce(sum(s.size), 0) FROM {{sizes}} s WHERE s.digest IN ({marks}) "
                            "AND NOT EXISTS (SELECT 1 FROM {members} m WHERE m.digest = s.digest "
                            "AND (m.org <> ? OR m.repository <> ? OR m.image <> ?))", (*new, org, repository, image))

    def _sized_many(self, c: Any, pairs: list[tuple[str, int]]) -> None:
        """The sizes of digests stored (or declared), in two statements a chunk when any is new: images listing
        a digest whose size was not known yet grow by it, and so do the usages. A digest's first size counts."""
        for start in range(0, len(pairs), KEYS_PER_READ):
            chunk = pairs[start:start + KEYS_PER_READ]
            if self.usage_deferred:
                self._whole_cache_used = True
                self.run(c, "INSERT INTO {sizes} VALUES " + ", ".join(["(?, ?)"] * len(chunk)) + " ON CONFLICT DO NOTHING",
                         tuple(part for pair in chunk for part in pair))
            else:
                self._sized_chunk(c, chunk)

    def _sized_chunk(self, c: Any, pairs: list[tuple[str, int]]) -> None:
        added = self.run(c, "INSERT INTO {sizes} VALUES " + ", ".join(["(?, ?)"] * len(pairs))
                         + " ON CONFLICT DO NOTHING RETURNING digest", tuple(part for pair in pairs for part in pair))
        if added:
            # Members listed before their size was known: each image grows by its members' new sizes.
            marks = ", ".join(["?"] * len(added))
            new = tuple(digest for (digest,) in added)
            if self.reads_are_local and not self.run(c, f"SELECT 1 FROM {{members}} WHERE digest IN ({marks}) LIMIT 1",
                                                     new):
                return   # listed by no image yet (a manifest's own declared sizes, before its members): no one grows
            self.run(c, "UPDATE {images} SET bytes = bytes + coalesce((SELECT SUM(s.size) FROM {members} m JOIN {sizes} s "
                        "ON s.digest = m.digest WHERE m.org = {images}.org AND m.repository = {images}.repository "
                        f"AND m.image = {{images}}.digest AND m.digest IN ({marks})), 0) WHERE (org, repository, digest) "
                        f"IN (SELECT org, repository, image FROM {{members}} WHERE digest IN ({marks}))", new + new)
            self._usages_sized(c, new)

    def _usages_sized(self, c: Any, new: tuple[str, ...]) -> None:
        """Digests whose size just became known count in the usage of every org with an image listing them."""
        marks = ", ".join(["?"] * len(new))
        self.run(c, f"INSERT INTO {{org_usage}} SELECT m.org, sum(s.size) FROM (SELECT DISTINCT org, digest FROM {{members}} "
                    f"WHERE digest IN ({marks})) m JOIN {{sizes}} s ON s.digest = m.digest WHERE 1 = 1 GROUP BY m.org "
                    "ON CONFLICT (org) DO UPDATE SET bytes = {org_usage}.bytes + excluded.bytes", new)
        self._add_usage(c, WHOLE_CACHE, f"SELECT coalesce(sum(s.size), 0) FROM {{sizes}} s WHERE s.digest IN ({marks}) "
                        "AND EXISTS (SELECT 1 FROM {members} m WHERE m.digest = s.digest)", new)

    def _add_usage(self, c: Any, scope: str, total: str, params: tuple) -> None:
        """Add the bytes the `total` query sums to the usage of `scope` (an org, or WHOLE_CACHE)."""
        self.run(c, f"INSERT INTO {{org_usage}} SELECT CAST(? AS TEXT), ({total}) WHERE 1 = 1 ON CONFLICT (org) "
                    "DO UPDATE SET bytes = {org_usage}.bytes + excluded.bytes", (scope, *params))

    def _evicted(self, c: Any, e: Any, position: int, page: _Page) -> None:
        key = (e.org, e.repository, e.digest)
        members = self.run(c, "SELECT digest FROM {members} WHERE org = ? AND repository = ? AND image = ?", key)
        self.run(c, "DELETE FROM {members} WHERE org = ? AND repository = ? AND image = ?", key)
        # Digests no image of the org (of any org) lists any more leave its usage (the whole cache's).
        gone = [digest for (digest,) in members] if not self.usage_deferred else []
        if self.usage_deferred and members:   # kept up, the usage rows are written for the digests that leave
            self._usage_orgs.add(e.org)
            self._whole_cache_used = True
        for start in range(0, len(gone), KEYS_PER_READ):
            chunk = tuple(gone[start:start + KEYS_PER_READ])
            marks = ", ".join(["?"] * len(chunk))
            for scope, only in ((e.org, "m.org = ? AND "), (WHOLE_CACHE, "")):
                self._add_usage(c, scope, f"SELECT -coalesce(sum(s.size), 0) FROM {{sizes}} s WHERE s.digest IN ({marks}) "
                                f"AND NOT EXISTS (SELECT 1 FROM {{members}} m WHERE {only}m.digest = s.digest)",
                                (*chunk, *((e.org,) if only else ())))
        self.run(c, "DELETE FROM {children} WHERE org = ? AND repository = ? AND image = ?", key)
        self.run(c, "UPDATE {images} SET held = 0, bytes = 0 WHERE org = ? AND repository = ? AND digest = ?", key)
        for (digest,) in members:   # referenced by no image of any org now, and stored: to delete after grace
            self.run(c, "INSERT INTO {orphans} SELECT digest, ?, 'waiting' FROM {sizes} WHERE digest = ? "
                        "AND NOT EXISTS (SELECT 1 FROM {members} WHERE digest = ?) ON CONFLICT DO NOTHING",
                     (e.at, digest, digest))
        self.run(c, "INSERT INTO {eviction_totals} VALUES (?, ?, ?, 1, ?) ON CONFLICT (org, generation, reason) "
                    "DO UPDATE SET evictions = {eviction_totals}.evictions + 1, "
                    "bytes = {eviction_totals}.bytes + excluded.bytes",
                 (e.org, self._generation(c, e.org, page), e.reason, e.bytes))
        self._log(c, position, "eviction", e.org, e.repository, e.digest, ",".join(e.tags), e.bytes, e.reason,
                  e.policy, e.actor, e.at, False, page)

    def _pinned(self, c: Any, e: Any, position: int, page: _Page) -> None:
        pinned = not isinstance(e, ImagePin.Unpinned)
        self.run(c, "INSERT INTO {images} (org, repository, digest, pinned) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (org, repository, digest) DO UPDATE SET pinned = excluded.pinned",
                 (e.org, e.repository, e.digest, int(pinned)))
        self._log(c, position, "pin" if pinned else "unpin", e.org, e.repository, e.digest, getattr(e, "tag", ""),
                  0, "", "", e.actor, e.at, False, page)

    def _log(self, c: Any, position: int, kind: str, org: str, repository: str, digest: str, tags: str, size: int,
             reason: str, policy: str, actor: str, at: float, dry_run: bool, page: _Page) -> None:
        self.run(c, "INSERT INTO {retention_log} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                 (position, kind, org, repository, digest, tags, size, reason, policy, actor, at, int(dry_run),
                  self._generation(c, org, page)))

    def _generation(self, c: Any, org: str, page: _Page) -> int:
        if org not in page.generations:
            rows = self.run(c, "SELECT generation FROM {retention_generations} WHERE org = ?", (org,))
            page.generations[org] = int(rows[0][0]) if rows else 1
        return page.generations[org]

    def _count_pulls(self, c: Any, pulls: dict[tuple[str, str, str], list]) -> None:
        """Add a page's pulls to their images' stats in one read and one batched upsert.

        The LFU score folds each pull's weight in notification order onto the stored score
        (domain/retention.add_weight, in Python): the same float whatever the page boundaries, so a
        rebuild in large pages writes exactly what the live runner, page by page, wrote.
        """
        if not pulls:
            return
        stored: dict[tuple[str, str, str], tuple[float, int, int]] = {}
        keys = list(pulls)
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start:start + KEYS_PER_READ]
            # The keys drive the join (CROSS JOIN keeps that order on SQLite), one primary-key search each:
            # SQLite planned `(org, repository, digest) IN (VALUES ...)` as a scan of every image per chunk
            # (200,000 images: a gathering's pulls read the table ~150 times over).
            rows = self.run(c, "SELECT i.org, i.repository, i.digest, i.score, i.provisional, i.generation FROM (VALUES "
                            + ", ".join(["(?, ?, ?)"] * len(chunk)) + ") AS v {cross_join} {images} AS i ON "
                            "i.org = v.column1 AND i.repository = v.column2 AND i.digest = v.column3",
                            tuple(part for key in chunk for part in key))
            stored.update({(org, repository, digest): (score, provisional, generation)
                           for org, repository, digest, score, provisional, generation in rows})
        values = []
        for key, (n, at, weights, generation) in pulls.items():
            score, provisional, stored_generation = stored.get(key, (None, 1, generation))
            if stored_generation > generation:
                continue   # pulls of an earlier org of the name, read after the new one cached the image
            # A provisional score stood in for the pull that cached the image: its first real pulls replace it;
            # the score of an earlier org of the name counts for nothing.
            score = None if provisional or stored_generation < generation else score
            for weight in weights:
                score = add_weight(score, weight)
            values.append((*key, at, n, score, generation))
        if values:
            self.add_pull_stats(c, values)

    # -- queries ---------------------------------------------------------------------------------------
    def ranking(self, org: str | None, policy: str, *, limit: int, offset: int = 0,
                victims_only: bool = True) -> list[ImageRank]:
        """Cached images in the order they would be evicted (pinned last, or left out for victims)."""
        order = ", ".join(f"{column}{{C}}" if column in ORDER_TIEBREAK else column
                          for column in eviction_order(policy))
        where, params = ["held = 1"], []
        if org is not None:
            where.append("org = ?")
            params.append(org)
        if victims_only:
            where.append("pinned = 0")
        rows = self.read(f"SELECT org, repository, digest, media_type, bytes, last_used, pull_count, score, pinned "
                         f"FROM {{images}} WHERE {' AND '.join(where)} "
                         f"ORDER BY {'' if victims_only else 'pinned, '}{order} LIMIT ? OFFSET ?",
                         (*params, limit, offset))
        return [ImageRank(*row[:8], bool(row[8]), self.tags_of(*row[:3])) for row in rows]

    def tags_of(self, org: str, repository: str, digest: str) -> list[str]:
        return [tag for (tag,) in self.read("SELECT tag FROM {image_tags} WHERE org = ? AND repository = ? "
                                            "AND digest = ? ORDER BY tag{C}", (org, repository, digest))]

    def candidate(self, image: ImageRank, scope_org: str | None) -> Candidate:
        """The image's members with their size and how many images in scope reference each."""
        scope = "AND r.org = ?" if scope_org is not None else ""
        rows = self.read(f"SELECT m.digest, coalesce(s.size, 0), (SELECT count(*) FROM {{members}} r "
                         f"WHERE r.digest = m.digest {scope}) FROM {{members}} m LEFT JOIN {{sizes}} s "
                         f"ON s.digest = m.digest WHERE m.org = ? AND m.repository = ? AND m.image = ?",
                         (*([scope_org] if scope_org is not None else []), image.org, image.repository, image.digest))
        children = self.read("SELECT child FROM {children} WHERE org = ? AND repository = ? AND image = ?",
                             (image.org, image.repository, image.digest))
        return Candidate(image.org, image.repository, image.digest, {d: (size, refs) for d, size, refs in rows},
                         image.tags, [child for (child,) in children])

    def usage(self, org: str | None = None) -> int:
        """Bytes of the distinct digests the org's images (or every org's) reference: one kept row."""
        rows = self.read("SELECT bytes FROM {org_usage} WHERE org = ?", (WHOLE_CACHE if org is None else org,))
        return int(rows[0][0]) if rows else 0

    def pinned_usage(self, org: str) -> int:
        # From the org's pinned images to their members (CROSS JOIN keeps that order on SQLite, whose
        # planner otherwise walked every member of the org: 3 ms at 2,000 members, 0.01 ms this way).
        return int(self.read("SELECT coalesce(sum(s.size), 0) FROM (SELECT DISTINCT m.digest FROM {images} i "
                             "CROSS JOIN {members} m WHERE i.org = ? AND i.pinned = 1 AND i.held = 1 "
                             "AND m.org = i.org AND m.repository = i.repository AND m.image = i.digest) d "
                             "JOIN {sizes} s ON s.digest = d.digest", (org,))[0][0])

    def oversized(self, org: str, limit_bytes: int) -> list[ImageRank]:
        """Held, unpinned images bigger than the whole quota: never kept."""
        rows = self.read("SELECT org, repository, digest, media_type, bytes, last_used, pull_count, score, pinned "
                         "FROM {images} WHERE org = ? AND held = 1 AND pinned = 0 AND bytes > ?", (org, limit_bytes))
        return [ImageRank(*row[:8], False, self.tags_of(*row[:3])) for row in rows]

    def image(self, org: str, repository: str, digest: str) -> ImageRank | None:
        rows = self.read("SELECT org, repository, digest, media_type, bytes, last_used, pull_count, score, pinned "
                         "FROM {images} WHERE org = ? AND repository = ? AND digest = ? AND held = 1",
                         (org, repository, digest))
        return ImageRank(*rows[0][:8], bool(rows[0][8]), self.tags_of(*rows[0][:3])) if rows else None

    def tag_digest(self, org: str, repository: str, tag: str) -> str | None:
        rows = self.read("SELECT digest FROM {image_tags} WHERE org = ? AND repository = ? AND tag = ?",
                         (org, repository, tag))
        return rows[0][0] if rows else None

    def held_images(self, org: str, repository: str | None = None) -> list[ImageRank]:
        where, params = "org = ? AND held = 1", [org]
        if repository is not None:
            where, params = where + " AND repository = ?", [org, repository]
        rows = self.read(f"SELECT org, repository, digest, media_type, bytes, last_used, pull_count, score, pinned "
                         f"FROM {{images}} WHERE {where} ORDER BY repository{{C}}, digest{{C}}", tuple(params))
        return [ImageRank(*row[:8], bool(row[8]), self.tags_of(*row[:3])) for row in rows]

    def pinned(self, org: str) -> list[ImageRank]:
        rows = self.read("SELECT org, repository, digest, media_type, bytes, last_used, pull_count, score, pinned "
                         "FROM {images} WHERE org = ? AND pinned = 1 ORDER BY repository{C}, digest{C}", (org,))
        return [ImageRank(*row[:8], True, self.tags_of(*row[:3])) for row in rows]

    def orphans_due(self, cutoff: float, limit: int = 500) -> list[tuple[str, int, float, str]]:
        """(digest, size, unreferenced since, state): a deletion under way, or unreferenced since before cutoff."""
        return self.read("SELECT o.digest, coalesce(s.size, 0), o.since, o.state FROM {orphans} o "
                         "LEFT JOIN {sizes} s ON s.digest = o.digest WHERE o.state = 'deleting' OR o.since <= ? "
                         "ORDER BY o.since, o.digest{C} LIMIT ?", (cutoff, limit))

    def all_eviction_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """{(org, reason): (evictions, bytes)} over every generation (a Prometheus counter never falls):
        one small table, for the metrics scrape."""
        return {(org, reason): (int(n), int(size)) for org, reason, n, size in self.read(
            "SELECT org, reason, sum(evictions) AS evictions, sum(bytes) AS bytes FROM {eviction_totals} "
            "GROUP BY org, reason")}   # named: PostgreSQL rows come as dicts, where two unnamed sums share a key

    def latest_generation(self, org: str) -> int:
        """The org's generation as far as this view has read Registry's log (1 before any)."""
        rows = self.read("SELECT generation FROM {retention_generations} WHERE org = ?", (org,))
        return int(rows[0][0]) if rows else 1

    def org_usages(self) -> dict[str, int]:
        """{org: bytes of the distinct digests its images reference}, for the metrics scrape."""
        return {org: int(size) for org, size in self.read(
            "SELECT d.org, coalesce(sum(s.size), 0) FROM (SELECT DISTINCT org, digest FROM {members}) d "
            "JOIN {sizes} s ON s.digest = d.digest GROUP BY d.org")}

    def eviction_totals(self, org: str, generation: int | None = None) -> dict[str, tuple[int, int]]:
        """{reason: (evictions, bytes)} of the org's latest generation, or of `generation` (0: all of them)."""
        if generation is None:
            generation = self.latest_generation(org)
        where, params = ("", (org,)) if generation == 0 else (" AND generation = ?", (org, generation))
        return {reason: (int(n), int(size)) for reason, n, size in self.read(
            f"SELECT reason, sum(evictions) AS evictions, sum(bytes) AS bytes FROM {{eviction_totals}} WHERE org = ?{where} "
            "GROUP BY reason", params)}

    def log(self, *, org: str | None = None, kind: str | None = None, before: int | None = None,
            limit: int = 100, generation: int | None = None) -> list[RetentionEntry]:
        """Evictions, flushes and pins (of every generation, or of `generation`), newest first; `before` is
        the last id of the previous page."""
        where, params = ["1 = 1"], []
        for column, value in (("org", org), ("kind", kind), ("generation", generation)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        rows = self.read(f"SELECT * FROM {{retention_log}} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                         (*params, limit))
        return [RetentionEntry(*row[:11], bool(row[11]), int(row[12])) for row in rows]


def _gather_pull(pulls: dict, event: Any) -> None:
    if not event.digest or event.result == "error":
        return
    key = (event.org, event.repository, event.digest)
    seen = pulls.get(key)
    if seen is None or seen[3] < event.generation:   # a new org of the name: its pulls alone count
        # The weights as C doubles (8 B each, not a 32 B float object and its list slot): a gathering holds
        # every pull of 2.5M events (REGISTRY_BOUNDED_GATHERING_SCALE), ~60 MiB less per gathering (below
        # the pass's peak at 10M pulls, which the Registry log's gathering sets: session 21).
        seen = pulls[key] = [0, event.at, array("d"), event.generation]
    elif seen[3] > event.generation:
        return
    seen[0] += 1
    seen[1] = max(seen[1], event.at)
    seen[2].append(pull_weight(event.at))   # folded in this order onto the stored score (_count_pulls)
