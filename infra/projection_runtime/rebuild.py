"""Rebuilding views from the event store: offline in place on SQLite, blue/green on PostgreSQL."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.bulk import clear_views, restore_indexes
from infra.projection_runtime.bluegreen import RebuildInProgress, rebuild_blue_green_many
from infra.projection_runtime.opening import APPLICATIONS, is_postgres, open_view
from infra.projection_runtime.replay import STOP_CHECK, replay_shared
from infra.projection_runtime.second_process import ChildRebuild, spare_core, split
from projections.catalog import spec

log = logging.getLogger(__name__)

# Pages of a rebuild are larger than a live runner's (workers.PAGE_SIZE): each is one transaction
# per view, and views that group a page's pulls per image write fewer rows for a larger page.
REBUILD_PAGE_SIZE = 5000
PAGE_SIZE = REBUILD_PAGE_SIZE
# SQLite page cache per view during an offline rebuild (KiB; 0: SQLite's default of 2 MiB). Off until a
# quiet run of bench.rebuild --cache-kib shows it pays (issue 14 notes: audit's indexes at 1M pulls).
REBUILD_CACHE_KIB = 0
# A rebuild is a bulk load into empty views: views that gather (View.gathers) write every this many events
# instead of every page, and secondary indexes are dropped first and made once at the end (bulk.py).
# 0: page by page with the indexes kept, as before. Bounds the memory a gathering holds (the audit
# view's rows: ~0.5 KB each; the chain's stored notifications, linked when written: ~1.1 KB each).
REBUILD_BULK_EVENTS = 100_000
# Python's cyclic garbage collector during a rebuild: off (False: as it is). A bulk rebuild keeps millions of
# objects alive (the views' gatherings, pages read ahead), each of which the collector walks once or twice as it
# ages, and collects next to nothing: events, rows and pages form no cycles. A 1M-pull rebuild on PostgreSQL in
# one process, with the collector every 100,000 allocations (as from session 6 to 14: 1.2-1.45x faster than Python's
# default of 700), spent 10.5-11.1 s of its 48-50 s of CPU collecting (gc.callbacks); off: 54.2-54.6 s against 63.0-64.0 s
# of wall, CPU 39.4 against 48.1-49.8 s, peak memory the same (~820 MiB), and a collection after it found 137
# objects to free (bench/results/2026-12-01-rebuild-s15.md). It comes back on when the rebuild ends.
REBUILD_COLLECTS_CYCLES = False
# A rebuild of several views hands some of them (second_process.split: the chain, audit, blobs, history, tags,
# manifests, counters) to a child process that reads the logs itself, when their logs hold at least this many events
# (below, starting a Python process costs more than it saves). None: every view in this process; so too with
# one CPU to run on.
REBUILD_CHILD_EVENTS: int | None = 100_000
# ... and only with a core to spare: the 1-minute load average below this many times the CPUs it may use.
# The child reads (and for audit decodes) the logs again: ~30 % more CPU in all, which a saturated machine
# pays in wall time (1M pulls at load 8-13, same run: 0.85x one process on SQLite, 0.73x on PostgreSQL:
# bench/results/2026-11-30-rebuild-s7.md). None: whatever the load.
REBUILD_CHILD_LOAD: float | None = 1.0
# ... on PostgreSQL too (False: SQLite only). Session 7 kept it SQLite-only (a child there took 0.89x one
# process, quiet), but that parent's filtered page query scanned and sorted the rest of an unanalyzed log per
# page; with it bounded (session 8), a quiet machine took 1.24x on PostgreSQL and 1.30x on SQLite (1M pulls,
# six views, medians of 2 alternating rounds: bench/results/2026-11-30-rebuild-quiet-s8.json). The load gate
# above still keeps a saturated machine in one process (0.89x on PostgreSQL at load 9-14).
REBUILD_CHILD_ON_POSTGRES = True

__all__ = ["PAGE_SIZE", "REBUILD_BULK_EVENTS", "REBUILD_PAGE_SIZE", "RebuildInProgress", "rebuild", "rebuild_many"]


def rebuild(name: str, env: dict, page_size: int = REBUILD_PAGE_SIZE,
            archive: ArchivedRecords | None = None) -> dict[str, int]:
    """Replay every application the view follows; returns events replayed per application.

    PostgreSQL: while serving, into a new copy that replaces the live one atomically (bluegreen.py).
    SQLite: in place, so nothing else may write the view meanwhile: stop its runners (or the server)
    first. Events recorded during the rebuild are left for the runner, which resumes after the
    position the rebuild ends at. `archive`: the pulls archived by retention are replayed first
    (archived_pages.py); without it, views following Pulls lose them.
    """
    return rebuild_many((name,), env, page_size, archive=archive)[name]


def rebuild_many(names: tuple[str, ...], env: dict, page_size: int = REBUILD_PAGE_SIZE,
                 seconds: dict[str, float] | None = None,
                 archive: ArchivedRecords | None = None,
                 cache_kib: int = REBUILD_CACHE_KIB,
                 bulk_events: int = REBUILD_BULK_EVENTS,
                 child_events: int | None = REBUILD_CHILD_EVENTS,
                 child_load: float | None = REBUILD_CHILD_LOAD,
                 child_on_postgres: bool = REBUILD_CHILD_ON_POSTGRES) -> dict[str, dict[str, int]]:
    """Rebuild several views in one pass over each application's log: a page is read and decoded once
    and written into every view that follows the application (each view in its own transaction).

    Returns {view: {application: events replayed}}; `seconds`, when given, receives each view's
    writing time (the rest, reading and decoding, is shared). `bulk_events`: see REBUILD_BULK_EVENTS.
    `child_events`, `child_load`, `child_on_postgres`: see REBUILD_CHILD_EVENTS, REBUILD_CHILD_LOAD and
    REBUILD_CHILD_ON_POSTGRES (events None: every view in this process).
    """
    names = tuple(names)
    for name in names:
        spec(name)   # an unknown name fails before anything is cleared
    child = child_events is not None and (child_on_postgres or not is_postgres(env)) and spare_core(child_load)
    here, there = split(names, archive) if child else (names, ())
    if there and logged_events(env, there) < child_events:
        here, there = names, ()
    kwargs = {"env": env, "page_size": page_size, "cache_kib": cache_kib, "bulk_events": bulk_events}
    if not there:
        replayed, spent = rebuild_here(names, archive=archive, **kwargs)
    else:
        child = ChildRebuild(rebuild_here, there, kwargs)
        stop_when_failed = STOP_CHECK.set(child.raise_if_failed)   # a failed child stops this part too
        try:
            try:
                replayed, spent = rebuild_here(here, archive=archive, **kwargs)
            except BaseException:
                child.stop()
                raise
            finally:
                STOP_CHECK.reset(stop_when_failed)
            replayed_there, spent_there = child.result()
        finally:
            child.close()
        replayed, spent = {**replayed, **replayed_there}, {**spent, **spent_there}
    if seconds is not None:
        seconds.update(spent)
    return {name: replayed[name] for name in names}


def rebuild_here(names: tuple[str, ...], env: dict, page_size: int, cache_kib: int, bulk_events: int,
                 archive: ArchivedRecords | None = None) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """rebuild_many's views in this process: (replayed, each view's writing seconds)."""
    spent: dict[str, float] = {}
    with collecting_less():
        if is_postgres(env):
            replayed = rebuild_blue_green_many(names, env, page_size, spent, archive=archive, bulk_events=bulk_events)
        else:
            replayed = _rebuild_in_place(names, env, page_size, spent, archive, cache_kib, bulk_events)
    return replayed, spent


def logged_events(env: dict, names: tuple[str, ...]) -> int:
    """How many events the logs the views follow hold (their heads): what a child process would replay."""
    total = 0
    for app_name in {app for name in names for app in spec(name).applications}:
        app = APPLICATIONS[app_name](env=env)
        try:
            total += app.recorder.max_notification_id() or 0
        finally:
            app.close()
    return total


_collecting = threading.Lock()
_rebuilding: list = [0, True]   # rebuilds under way in this process; whether the collector ran before the first


@contextmanager
def collecting_less() -> Iterator[None]:
    """Python's cyclic garbage collector off while it lasts (unless REBUILD_COLLECTS_CYCLES), then as it was
    once the last of overlapping rebuilds (threads of one process: the collector is the process's) ends."""
    with _collecting:
        if _rebuilding[0] == 0:
            _rebuilding[1] = gc.isenabled()
            if not REBUILD_COLLECTS_CYCLES:
                gc.disable()
        _rebuilding[0] += 1
    try:
        yield
    finally:
        with _collecting:
            _rebuilding[0] -= 1
            if _rebuilding[0] == 0 and _rebuilding[1]:
                gc.enable()


def _rebuild_in_place(names: tuple[str, ...], env: dict, page_size: int, seconds: dict[str, float] | None,
                      archive: ArchivedRecords | None, cache_kib: int, bulk_events: int) -> dict[str, dict[str, int]]:
    """rebuild_many on SQLite: each view cleared and rebuilt in its own file."""
    replayed: dict[str, dict[str, int]] = {name: {} for name in names}
    spent = dict.fromkeys(names, 0.0)
    with ExitStack() as stack:
        views = {}
        for name in names:
            views[name] = open_view(name, env)
            views[name].cache_kib = cache_kib
            stack.callback(views[name].close)
        clear_views(list(views.values()), drop_indexes=bool(bulk_events))
        for app_name, app_class in APPLICATIONS.items():
            followers = [name for name in names if app_name in spec(name).applications]
            if not followers:
                continue
            app = app_class(env=env)
            try:
                took = [0.0] * len(followers)
                counts = replay_shared([views[name] for name in followers], app, page_size, [0] * len(followers),
                                       seconds=took, archive=archive, gather_events=bulk_events)
            finally:
                app.close()
            for name, count, t in zip(followers, counts, took):
                replayed[name][app_name] = count
                spent[name] += t
        if bulk_events:
            for name, took in restore_indexes(list(views.values())).items():
                spent[name] += took
    if seconds is not None:
        seconds.update(spent)
    log.info("rebuilt projections %s", replayed)
    return replayed
