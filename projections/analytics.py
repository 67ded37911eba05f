"""The analytics view: per org and minute/hour/day bucket, pulls by result, traffic, fill latency,
distinct clients and repositories, and the top repositories and images per day.

Fed by Pull.Recorded and TrafficReport.Recorded (both in Pulls) and, once the quota work records
them, image evictions. Every write adds to a row, so a page is a handful of upserts and two runners
could interleave. Distinct clients and repositories are exact per bucket: each bucket keeps the set of
its members (projections/analytics_sets.py: an integer per member, a bitmap per bucket), and a range
counts the members of the union of its buckets' sets. Those sets are read, merged and rewritten once
per page (in a bulk rebuild, per gathering of pages) and bucket: only the Pulls runner writes them (the
Registry runner's events have no members).
Top lists over a range are exact too, without summing every day's rows (projections/analytics_top.py).

Minute buckets are kept for the last [analytics] minute_days days only (domain.analytics.minute_floor):
the view stores that floor (`analytics_minute_floor`), raises it as time goes on and forgets the minute
rows below it a step at a time; a rebuild writes none below it. Queries read the stored floor and ask
nothing finer than hours before it (application/analytics.py), so what a rebuild skipped and what the
live view has not forgotten yet answer alike.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Tracking

from domain.cache import CachedManifest
from domain.org import CacheOrg
from domain.analytics import ALL_GENERATIONS, DAY, DEFAULT_MINUTE_DAYS, HOUR, MINUTE, ROLLUPS, bucket_start, minute_floor
from domain.pull import Pull
from domain.traffic import TrafficReport
from projections import analytics_sets
from projections.analytics_top import exact_top
from projections.base import AGGREGATE_GATHERING_SCALE, Batch, View

# Evictions (issue 10): an image leaves the cache as CachedManifest.Evicted; an index's children record it
# too (their `image` is the index), so only the event of the image itself is counted.
EVICTION_EVENTS: tuple[type, ...] = (CachedManifest.Evicted,)

# A top list over more days than this sums every row (a statement per day range would be too long).
MAX_TOP_DAYS = 2000
MAX_PARAMETERS = 30_000   # per statement: SQLite takes at most 32,766
# Minute rows below the floor are forgotten this much of their time range per page: the first page after an
# upgrade would otherwise delete a year of them (millions of rows) in one transaction.
FORGET_STEP = 2 * DAY
# The tables with minute buckets (their (grain, start) indexes find those below the floor).
MINUTE_TABLES = ("analytics_pulls", "analytics_traffic", "analytics_fills", "analytics_member_sets")

# The traffic columns, added up per bucket; their order is the rows' order.
TRAFFIC = ("bytes_served", "bytes_from_upstream", "blob_hits", "blob_misses", "fills", "fills_failed", "evictions")


@dataclass
class Totals:
    """What the view adds up over some buckets of one org."""
    pulls: Counter = field(default_factory=Counter)              # result -> n
    traffic: Counter = field(default_factory=Counter)            # TRAFFIC column -> sum
    fill_seconds: Counter = field(default_factory=Counter)       # FILL_SECONDS_BUCKETS index -> n
    clients: int = 0
    repositories: int = 0


@dataclass
class Page:
    """One page of events, or many pages gathered in a bulk rebuild, added up before it reaches the database.
    Every key starts with (org, generation). No minute bucket starting before `floor` is added (the view's
    minute floor when the page began: AnalyticsView.minute_floor_now)."""
    floor: int = 0
    pulls: Counter = field(default_factory=Counter)       # (org, generation, grain, start, result)
    traffic: dict = field(default_factory=dict)           # (org, generation, grain, start) -> Counter of TRAFFIC
    fills: Counter = field(default_factory=Counter)       # (org, generation, grain, start, bucket)
    # (org, generation, minute) -> ({client: None}, {repository: None}): each minute's members; the hour's
    # and the day's sets are the union of their minutes'. Before the floor, keyed by the minute's hour.
    minute_members: dict = field(default_factory=dict)
    # (org, kind) -> {member: None} in order of first appearance: new members are numbered in that order.
    member_order: dict = field(default_factory=dict)
    images: Counter = field(default_factory=Counter)      # (org, generation, day, repository, reference) -> pulls
    repositories: dict = field(default_factory=dict)      # (org, generation, day, repository) -> [pulls, bytes]
    generations: dict = field(default_factory=dict)       # org -> [registered, latest] (see AnalyticsView)
    registered: dict = field(default_factory=dict)        # org -> its generation at this point of Registry's log
    # Not yet added up (write_gathered does): pulls per _pull_key, in order of each key's first pull (members
    # are numbered in log order); evictions of orgs not in `registered` when they came: org -> [at, ...].
    pull_keys: Counter = field(default_factory=Counter)
    unresolved_evictions: dict = field(default_factory=dict)

    def add_traffic(self, org: str, generation: int, at: float, **values: int) -> None:
        for grain in self.grains(at):
            row = self.traffic.setdefault((org, generation, grain, bucket_start(at, grain)), Counter())
            row.update(values)

    def grains(self, at: float) -> tuple[int, ...]:
        """The rollups `at` is added to: all of them, or hours and days only before the floor."""
        return ROLLUPS if at >= self.floor else ROLLUPS[1:]

    def drop_minutes_before(self, floor: int) -> None:
        """Leave out the minute buckets before `floor` (a floor raised after the page began)."""
        self.floor = floor
        for table in (self.pulls, self.traffic, self.fills):
            for key in [key for key in table if key[2] == MINUTE and key[3] < floor]:
                del table[key]

    def repository(self, org: str, generation: int, at: float, repository: str) -> list[int]:
        return self.repositories.setdefault((org, generation, bucket_start(at, DAY), repository), [0, 0])

    def seen(self, org: str, generation: int, registered: int = 1) -> None:
        row = self.generations.setdefault(org, [1, 1])
        row[0], row[1] = max(row[0], registered), max(row[1], generation)


class AnalyticsView(View):
    """Kept per generation of the org: pulls and traffic reports carry theirs; an eviction (a Registry
    event without one) counts for the org's generation at that point of Registry's log, which the view
    keeps from CacheOrg.Registered/Recreated in `analytics_generations (org, registered, latest)`:
    `registered` as Registry's runner has seen it (in log order, so a rebuild assigns the same), `latest`
    the highest seen by either runner, which queries read as the org's current generation."""

    name = "analytics"
    handles = (Pull.Recorded, TrafficReport.Recorded, *EVICTION_EVENTS, CacheOrg.Registered, CacheOrg.Recreated)
    follows = ("Pulls", "Registry")

    # Every event folds into a Page (sums, maxima, member sets ORed), so any number of pages, even of both
    # logs, can be gathered and written at once (a bulk rebuild: infra/projection_runtime/bulk.py).
    gathers = handles
    gathering_scale = AGGREGATE_GATHERING_SCALE   # a row per key, not per event (View.gathering_scale)

    minute_days: float = DEFAULT_MINUTE_DAYS   # [analytics] minute_days (configure); 0: minutes kept forever
    _forgotten_below: int = -1    # the floor below which no minute row was left when last looked (this process)

    def configure(self, settings: Any) -> None:
        days = settings.get("MINUTE_DAYS")
        if days not in (None, ""):
            self.minute_days = float(days)

    def process_page(self, c: Any, batch: Batch) -> None:
        self.gathered_page(c, batch)

    def gathering(self) -> Page:
        return Page(floor=self.minute_floor_now())

    def minute_floor_now(self) -> int:
        """The first hour whose minute buckets are kept, by the clock (0: all are)."""
        return minute_floor(self.now(), self.minute_days)

    def write_gathered(self, c: Any, page: Page) -> None:
        floor = self.keep_minutes_from(c, page.floor)
        if floor > page.floor:
            page.drop_minutes_before(floor)
        _add_pulls(page, page.pull_keys)
        page.pull_keys.clear()
        # An eviction of an org with no registration earlier in the page counts for the org's generation
        # before the page: the stored one, as nothing of the page is written yet.
        for org, times in page.unresolved_evictions.items():
            generation = self.registered_generation(c, org)
            for at in times:
                page.add_traffic(org, generation, at, evictions=1)
        page.unresolved_evictions.clear()
        # Sorted: the two runners (Pulls, and Registry for evictions) take row locks in the same order.
        if page.pulls:
            self.add_pulls(c, sorted((*key, n) for key, n in page.pulls.items()))
        if page.traffic:
            self.add_traffic(c, sorted((*key, *(row[name] for name in TRAFFIC)) for key, row in page.traffic.items()))
        if page.fills:
            self.add_fills(c, sorted((*key, n) for key, n in page.fills.items()))
        if page.minute_members:
            self.write_member_sets(c, page)
        if page.images:
            self.add_images(c, sorted((*key, n) for key, n in page.images.items()))
        if page.repositories:
            self.add_repositories(c, sorted((*key, *values) for key, values in page.repositories.items()))
        if page.generations:
            self.add_generations(c, sorted((org, *values) for org, values in page.generations.items()))

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the page (Page) here: the sums reach the database in write_gathered.
        if isinstance(event, Pull.Recorded):
            # Counted per (org, minute, result, client, repository, reference) first: pages hold many pulls
            # of the same few keys, and each key then costs its bucket arithmetic once (write_gathered).
            c.pull_keys[_pull_key(event)] += 1
        elif isinstance(event, TrafficReport.Recorded):
            generation = event.generation
            c.seen(event.org, generation)
            c.add_traffic(event.org, generation, event.until, bytes_served=sum(event.bytes_served.values()),
                          bytes_from_upstream=sum(event.bytes_fetched.values()),
                          blob_hits=event.blob_pulls.get("hit", 0), blob_misses=event.blob_pulls.get("miss", 0),
                          fills=event.fills, fills_failed=event.fills_failed)
            for grain in c.grains(event.until):
                for index, n in enumerate(event.fill_seconds):
                    if n:
                        c.fills[(event.org, generation, grain, bucket_start(event.until, grain), index)] += n
            for repository, size in event.repositories.items():
                c.repository(event.org, generation, event.until, repository)[1] += size
        elif isinstance(event, CachedManifest.Evicted) and event.image == event.digest:
            if event.org in c.registered:
                c.add_traffic(event.org, c.registered[event.org], event.at, evictions=1)
            else:   # the generation stored before the page: write_gathered reads it
                c.unresolved_evictions.setdefault(event.org, []).append(event.at)
        elif isinstance(event, (CacheOrg.Registered, CacheOrg.Recreated)):
            generation = getattr(event, "generation", 1)
            c.registered[event.name] = generation
            c.seen(event.name, generation, generation)

    def keep_minutes_from(self, c: Any, floor: int) -> int:
        """Raise the stored minute floor to `floor` (or to what the clock says now, if later) and forget a
        step of the minute rows below it; the floor the page's rows are written with."""
        if not self.minute_days:
            return 0
        stored = self.stored_minute_floor(c)
        floor = max(floor, self.minute_floor_now())
        if floor > stored:
            self.put_minute_floor(c, floor)
        else:
            floor = stored
        if self._forgotten_below != floor:
            oldest = self.oldest_minute(c)
            if oldest is not None and oldest < floor:
                self.forget_minutes(c, min(floor, oldest + FORGET_STEP))
            else:   # looked again only once the floor rises: an hour from now
                self._forgotten_below = floor
        return floor

    def write_member_sets(self, c: Any, page: Page) -> None:
        """Number the page's new members, then add the page's members to each of their buckets' sets.

        A bucket's members are gathered as integers and encoded once (analytics_sets.encode_members), not as
        an int per minute OR-ed into its hour and day: most buckets a rebuild writes are minutes of one or
        two members, whose int spans the org's highest integer (2.5 KB at 20,000 repositories)."""
        ids = {key: self.intern(c, *key, list(order)) for key, order in page.member_order.items()}
        # (org, generation, grain, start) -> ([clients' integers], [repositories' integers]), repeats allowed
        sets: dict[tuple, tuple[list[int], list[int]]] = {}
        for (org, generation, minute), kinds in page.minute_members.items():
            grains = page.grains(minute)   # before the floor, the minute's members go to its hour and day only
            for index, kind in enumerate(("client", "repository")):
                if not kinds[index]:
                    continue
                numbers = ids[(org, kind)]
                found = [numbers[name] for name in kinds[index]]
                for grain in grains:
                    key = (org, generation, grain, bucket_start(minute, grain))
                    row = sets.get(key)
                    if row is None:
                        row = sets[key] = ([], [])
                    row[index].extend(found)
        spans: dict[tuple, list[int]] = {}   # (org, generation, grain) -> [first start, last start]
        for org, generation, grain, start in sets:
            span = spans.get((org, generation, grain))
            if span is None:
                spans[(org, generation, grain)] = [start, start]
            else:
                span[0], span[1] = min(span[0], start), max(span[1], start)
        stored: dict[tuple, tuple[bytes, bytes]] = {}   # the buckets' sets as stored before this page
        for (org, generation, grain), (first, last) in spans.items():
            for start, clients, repositories in self.member_sets(c, org, generation, grain, first, last):
                if (org, generation, grain, start) in sets:
                    stored[(org, generation, grain, start)] = (clients, repositories)
        rows = []
        for key, members in sets.items():
            before = stored.get(key)
            if before is None:
                rows.append((*key, *map(analytics_sets.encode_members, members)))
            else:
                rows.append((*key, *(analytics_sets.encode(analytics_sets.of(new) | analytics_sets.decode(old))
                                     for new, old in zip(members, before))))
        self.put_member_sets(c, sorted(rows))

    def intern(self, c: Any, org: str, kind: str, names: list[str]) -> dict[str, int]:
        """{name: its integer} for these members of the org, numbering new ones in the order given after
        the org's last (per org and kind, not generation: a set of all generations is then their union)."""
        if not names:
            return {}
        numbers = self.member_ids(c, org, kind, names)
        new = [name for name in names if name not in numbers]
        if new:
            first = self.next_member_id(c, org, kind)
            added = {name: first + i for i, name in enumerate(new)}
            self.add_member_ids(c, [(org, kind, name, number) for name, number in added.items()])
            numbers.update(added)
        return numbers

    # -- storage (one transaction's cursor `c`) -------------------------------------------------------
    @abstractmethod
    def add_pulls(self, c: Any, rows: list[tuple]) -> None: """(org, generation, grain, start, result, n): add n."""

    @abstractmethod
    def add_traffic(self, c: Any, rows: list[tuple]) -> None: """(org, generation, grain, start, *TRAFFIC): add each."""

    @abstractmethod
    def add_fills(self, c: Any, rows: list[tuple]) -> None: """(org, generation, grain, start, bucket, n): add n."""

    @abstractmethod
    def member_ids(self, c: Any, org: str, kind: str, names: list[str]) -> dict[str, int]:
        """{name: integer} of those of `names` the org has numbered already."""

    @abstractmethod
    def next_member_id(self, c: Any, org: str, kind: str) -> int: """The org's highest integer of `kind` + 1 (0 first)."""

    @abstractmethod
    def add_member_ids(self, c: Any, rows: list[tuple]) -> None: """(org, kind, member, id): new members."""

    @abstractmethod
    def member_sets(self, c: Any, org: str, generation: int, grain: int, first: int, last: int) -> list[tuple]:
        """(start, stored clients, stored repositories) of the org's buckets of `grain` starting from first
        to last, inclusive."""

    @abstractmethod
    def put_member_sets(self, c: Any, rows: list[tuple]) -> None:
        """(org, generation, grain, start, stored clients, stored repositories): insert, or replace the stored ones."""

    @abstractmethod
    def add_images(self, c: Any, rows: list[tuple]) -> None: """(org, generation, day, repository, reference, pulls)."""

    @abstractmethod
    def stored_minute_floor(self, c: Any) -> int: """The stored minute floor (0 when none is)."""

    @abstractmethod
    def put_minute_floor(self, c: Any, floor: int) -> None: """Store the minute floor."""

    @abstractmethod
    def oldest_minute(self, c: Any) -> int | None: """The earliest start of any minute row (None: there is none)."""

    @abstractmethod
    def forget_minutes(self, c: Any, before: int) -> None: """Delete every minute row starting before `before`."""

    @abstractmethod
    def add_repositories(self, c: Any, rows: list[tuple]) -> None: """(org, generation, day, repository, pulls, bytes)."""

    @abstractmethod
    def add_generations(self, c: Any, rows: list[tuple]) -> None: """(org, registered, latest): the higher of each."""

    @abstractmethod
    def registered_generation(self, c: Any, org: str) -> int: """The org's `registered` generation (1 if none)."""

    # -- queries ---------------------------------------------------------------------------------------
    @abstractmethod
    def _rows(self, text: str, params: list, serial: bool = False) -> list[tuple]:
        """Rows of a read statement written with {table} placeholders and %s parameters; `serial`: a read
        of every org, which PostgreSQL would otherwise plan with parallel workers."""

    def totals(self, pieces: list[tuple[int, int, int]], org: str | None = None,
               by_start: bool = False, distinct: bool = True, generation: int | None = None,
               parts: Collection[str] = ("pulls", "traffic", "fills")) -> dict[Any, Totals]:
        """Sums over the buckets (grain, first start, end) of `pieces` (domain.analytics.cover), per org,
        or per (org, bucket start) with `by_start` (then give pieces of one grain). The distinct counts,
        the one part that reads a row per member, only with `distinct`; of the others only `parts`
        (a series of one figure reads one table). Of each org's latest generation, or of `generation`
        (ALL_GENERATIONS: all added up); distinct counts then count a member once."""
        if not pieces:
            return {}
        key = "org, start" if by_start else "org"
        out: dict[Any, Totals] = {}
        if generation is None and org is not None:   # one org's latest: an equality, so the key's index range
            generation = self.latest_generation(org)
        chosen, chosen_params = generation_filter(generation)

        def rows(table: str, columns: str, select: str, group: str | None) -> list[tuple]:
            # One index range read per piece, glued with UNION ALL: an OR of the ranges in one WHERE
            # would have the databases scan every row of the org instead.
            where = ("org = %s AND " if org is not None else "") + "grain = %s AND start >= %s AND start < %s"
            where += chosen
            source = " UNION ALL ".join(f"SELECT org, start, {columns} FROM {{{table}}} AS a WHERE {where}"
                                        for _ in pieces)
            params = [value for piece in pieces
                      for value in ((org, *piece, *chosen_params) if org is not None else (*piece, *chosen_params))]
            if by_start and len(pieces) == 1 and generation != ALL_GENERATIONS:
                # A series: one row per bucket and key already, so the rows as stored, in key order.
                return self._rows(source, params, serial=org is None)
            grouped = "" if group is None else f" GROUP BY {key}{group}"   # None: every row of every piece
            return self._rows(f"SELECT {key}, {select} FROM ({source}) AS piece{grouped}", params, serial=org is None)

        def of(row: tuple) -> Totals:
            k = (row[0], row[1]) if by_start else row[0]
            totals = out.get(k)
            if totals is None:   # not setdefault: a Totals per row read would cost more than the query
                totals = out[k] = Totals()
            return totals
        width = 2 if by_start else 1
        reads = {}
        if "pulls" in parts:
            reads["pulls"] = lambda: rows("analytics_pulls", "result, n", "result, SUM(n) AS n", ", result")
        if "traffic" in parts:
            # Named columns: PostgreSQL rows come as dicts, where unnamed SUMs would share one key.
            reads["traffic"] = lambda: rows("analytics_traffic", ", ".join(TRAFFIC),
                                            ", ".join(f"SUM({n}) AS {n}" for n in TRAFFIC), "")
        if "fills" in parts:
            reads["fills"] = lambda: rows("analytics_fills", "bucket, n", "bucket, SUM(n) AS n", ", bucket")
        if distinct:
            reads["sets"] = lambda: rows("analytics_member_sets", "clients, repositories", "clients, repositories", None)
        read = _read_together(reads) if org is None else {name: call() for name, call in reads.items()}
        for row in read.get("pulls", ()):
            of(row).pulls[row[width]] += int(row[width + 1])
        for row in read.get("traffic", ()):
            of(row).traffic.update({name: int(value) for name, value in zip(TRAFFIC, row[width:])})
        for row in read.get("fills", ()):
            of(row).fill_seconds[int(row[width])] += int(row[width + 1])
        if distinct:
            stored: dict[Any, tuple[list, list]] = {}   # key -> (clients' sets, repositories' sets) of its pieces
            for row in read["sets"]:
                k = (row[0], row[1]) if by_start else row[0]
                sets = stored.get(k)
                if sets is None:
                    sets = stored[k] = ([], [])
                sets[0].append(row[width])
                sets[1].append(row[width + 1])
            for k, (clients, repositories) in stored.items():
                found = out.get(k)
                if found is None:
                    found = out[k] = Totals()
                found.clients = analytics_sets.union(clients).bit_count()
                found.repositories = analytics_sets.union(repositories).bit_count()
        return out

    def top(self, org: str, since: int, until: int, by: str, limit: int,
            generation: int | None = None) -> tuple[list[tuple], list[tuple]]:
        """Repositories (repository, pulls, bytes served) and images (repository, reference, pulls) with
        the most pulls (or bytes served) on the UTC days from since's to until's (generations as totals)."""
        first = bucket_start(since, DAY)
        if generation is None:
            generation = self.latest_generation(org)
        days = list(range(first, until, DAY))
        if generation != ALL_GENERATIONS and len(days) <= MAX_TOP_DAYS:
            return self._top_of_generation(org, days, by, limit, generation)
        chosen, chosen_params = generation_filter(generation)
        order = "2 DESC" if by == "pulls" else "3 DESC"
        repositories = self._rows(
            "SELECT repository, SUM(pulls) AS pulls, SUM(bytes) AS bytes FROM {analytics_repositories} AS a "
            f"WHERE org = %s AND day >= %s AND day < %s{chosen} GROUP BY repository ORDER BY {order}, 1 LIMIT %s",
            [org, first, until, *chosen_params, limit])
        images = self._rows(
            "SELECT repository, reference, SUM(pulls) AS pulls FROM {analytics_images} AS a WHERE org = %s "
            f"AND day >= %s AND day < %s{chosen} GROUP BY repository, reference ORDER BY 3 DESC, 1, 2 LIMIT %s",
            [org, first, until, *chosen_params, limit])
        return ([(r, int(p), int(b)) for r, p, b in repositories], [(r, ref, int(p)) for r, ref, p in images])

    def _top_of_generation(self, org: str, days: list[int], by: str, limit: int,
                           generation: int) -> tuple[list[tuple], list[tuple]]:
        """top() of one generation: each day's rows read in order of pulls (or bytes) down the
        (org, generation, day, pulls|bytes) indexes, as deep as exact_top needs (projections/analytics_top.py)."""
        def ranked(table: str, keys: tuple[str, ...], column: str) -> list[tuple]:
            names, width = ", ".join(keys), len(keys)

            def day_tops(depth: int) -> list[list[tuple]]:
                arms = " UNION ALL ".join(
                    f"SELECT * FROM (SELECT day, {names}, {column} AS v FROM {{{table}}} WHERE org = %s AND "
                    f"generation = %s AND day = %s ORDER BY {column} DESC LIMIT %s) AS d{i}" for i in range(len(days)))
                by_day: dict[int, list[tuple]] = {day: [] for day in days}
                for row in self._rows(arms, [value for day in days for value in (org, generation, day, depth)]):
                    by_day[row[0]].append((row[1] if width == 1 else tuple(row[1:1 + width]), int(row[-1])))
                return list(by_day.values())

            def totals(wanted: list) -> dict:
                return {key: sums[0] for key, sums in self._sums(table, keys, (column,), org, generation, days,
                                                                  wanted).items()}
            return exact_top(day_tops, totals, limit)

        if not days:
            return [], []
        repositories = self._sums("analytics_repositories", ("repository",), ("pulls", "bytes"), org, generation, days,
                                  [key for key, _ in ranked("analytics_repositories", ("repository",), by)])
        ordered = sorted(repositories.items(), key=lambda item: (-item[1][0 if by == "pulls" else 1], item[0]))
        images = ranked("analytics_images", ("repository", "reference"), "pulls")
        return ([(repository, pulls, size) for repository, (pulls, size) in ordered],
                [(repository, reference, pulls) for (repository, reference), pulls in images])

    def _sums(self, table: str, keys: tuple[str, ...], columns: tuple[str, ...], org: str, generation: int,
              days: list[int], wanted: list) -> dict:
        """{key: (sum of each column)} over `days` of the `wanted` keys (a repository, or a (repository,
        reference)): an index seek per day and repository."""
        if not wanted:
            return {}
        repositories = sorted({key if len(keys) == 1 else key[0] for key in wanted})
        names, width = ", ".join(keys), len(keys)
        sums = ", ".join(f"SUM({column}) AS {column}" for column in columns)

        # A day per arm: each an equality on the key's first columns and a list of repositories, which
        # PostgreSQL reads from the key's index even without statistics (with `day IN (...)` it chose a
        # scan of the org's rows on a view not yet analysed). Repositories in chunks: a statement takes
        # at most 32,766 parameters on SQLite.
        step = max(1, MAX_PARAMETERS // len(days) - 3)
        rows = []
        for chunk in (repositories[i:i + step] for i in range(0, len(repositories), step)):
            marks = ", ".join(["%s"] * len(chunk))
            arm = (f"SELECT {names}, {', '.join(columns)} FROM {{{table}}} WHERE org = %s AND generation = %s "
                   f"AND day = %s AND repository IN ({marks})")
            rows += self._rows(f"SELECT {names}, {sums} FROM ({' UNION ALL '.join([arm] * len(days))}) AS a "
                               f"GROUP BY {names}", [value for day in days for value in (org, generation, day, *chunk)])
        chosen, out = set(wanted), {}
        for row in rows:
            key = row[0] if width == 1 else tuple(row[:width])
            if key in chosen:
                out[key] = tuple(int(value) for value in row[width:])
        return out

    def minute_floor(self) -> int:
        """The first hour whose minute buckets are kept (0: every one): before it, read hours and days."""
        rows = self._rows("SELECT floor FROM {analytics_minute_floor}", [])
        return int(rows[0][0]) if rows else 0

    def latest_generation(self, org: str) -> int:
        """The org's latest generation as far as the view has read (1 before any)."""
        rows = self._rows("SELECT latest FROM {analytics_generations} WHERE org = %s", [org])
        return int(rows[0][0]) if rows else 1

    def generations(self) -> dict[str, int]:
        """{org: its latest generation} for every org the view has seen."""
        return {org: int(latest) for org, latest in self._rows("SELECT org, latest FROM {analytics_generations}", [])}

    def orgs(self) -> list[str]:
        """Every org with any analytics row."""
        # From the orgs the view has seen (a pull or a traffic report notes its org there), each checked
        # with an index seek: a DISTINCT over the rollups would read every row of them.
        return [row[0] for row in self._rows(
            "SELECT org FROM {analytics_generations} AS g WHERE EXISTS (SELECT 1 FROM {analytics_pulls} AS p "
            "WHERE p.org = g.org) OR EXISTS (SELECT 1 FROM {analytics_traffic} AS t WHERE t.org = g.org) ORDER BY 1", [])]


# Every org's summary reads four tables of every org: at once, each on its own pooled connection, so the
# database's work on one overlaps the others' and the decoding of what came first (PostgreSQL's part of
# a 36-org summary at 10M pulls was ~27 ms of ~40). Shared by the threads answering queries.
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="analytics-read")


def _read_together(reads: dict[str, Callable[[], list[tuple]]]) -> dict[str, list[tuple]]:
    """Each read's rows, the reads run at the same time."""
    if len(reads) < 2:
        return {name: call() for name, call in reads.items()}
    started = {name: _READERS.submit(call) for name, call in reads.items()}
    return {name: future.result() for name, future in started.items()}


def _pull_key(event: Any) -> tuple:
    return (event.org, event.generation, bucket_start(event.at, MINUTE), event.result, event.client,
            event.repository, event.reference)


def _add_pulls(page: Page, pulls: Counter) -> None:
    """Add pulls counted per _pull_key to every rollup (a minute's start is in the same hour and day as its pulls).

    The hot loop of a rebuild (every distinct pull key of a page, nearly one per pull at a large site): each
    minute's buckets are worked out once, the page's tables are bound to locals, and pulls are counted at
    their finest bucket kept (the minute, or before the floor its hour) first, then added to the coarser
    rollups once per bucket and result rather than once per key."""
    for org, generation in {(key[0], key[1]) for key in pulls}:   # once per org, not per key
        page.seen(org, generation)
    minutes, order = page.minute_members, page.member_order
    images, repositories = page.images, page.repositories
    floor = page.floor
    finest: Counter = Counter()   # (org, generation, finest bucket start, result) -> pulls
    # minute -> (its finest bucket kept, which also gathers its members; its day)
    starts: dict[int, tuple[int, int]] = {}
    orders: dict[str, tuple[dict, dict]] = {}   # org -> its clients and repositories in order of first appearance
    # Iterated in order of each key's first pull, so each member's first key comes in log order.
    for (org, generation, minute, result, client, repository, reference), n in pulls.items():
        known = starts.get(minute)
        if known is None:
            known = starts[minute] = (minute if minute >= floor else bucket_start(minute, HOUR),
                                      bucket_start(minute, DAY))
        at, day = known
        finest[(org, generation, at, result)] += n
        seen = minutes.get((org, generation, at))
        if seen is None:
            seen = minutes[(org, generation, at)] = ({}, {})
        named = orders.get(org)
        if named is None:
            named = orders[org] = (order.setdefault((org, "client"), {}), order.setdefault((org, "repository"), {}))
        if client:
            seen[0][client] = None
            named[0][client] = None
        seen[1][repository] = None
        named[1][repository] = None
        images[(org, generation, day, repository, reference)] += n
        row = repositories.get((org, generation, day, repository))
        if row is None:
            row = repositories[(org, generation, day, repository)] = [0, 0]
        row[0] += n
    counts = page.pulls
    for (org, generation, at, result), n in finest.items():
        for grain in page.grains(at):
            counts[(org, generation, grain, bucket_start(at, grain), result)] += n


def generation_filter(generation: int | None, table: str = "a") -> tuple[str, list]:
    """The condition (and its parameters) on a row of `table` (an alias) for `generation` (see ALL_GENERATIONS)."""
    if generation == ALL_GENERATIONS:
        return "", []
    if generation is None:
        # The set of (org, latest) read once (PostgreSQL hashes it, SQLite makes it an index), not a
        # lookup per row read. Every org with a row has its generation noted: a pull or a traffic report
        # notes it in the same page, and an eviction comes after its org's CacheOrg.Registered.
        return f" AND ({table}.org, {table}.generation) IN (SELECT g.org, g.latest FROM {{analytics_generations}} g)", []
    return f" AND {table}.generation = %s", [generation]
