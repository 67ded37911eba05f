"""The read model as it stood at an instant, replayed from the event store into one SQLite file for auditors.

Every view of the catalog is replayed (the same `replay` and the same view classes as a rebuild,
with only the events stamped at or before the instant) into a SQLite file of its own in a scratch
directory next to the output; their tables are then copied into the one output file, which is
renamed into place only when complete. The live views, their files and tables are never opened.
Robots, org admins and the admin log, which no view holds (the Access application is read from
its log), are folded from the Access events up to the same instant.

Pulls archived by retention are replayed too, before the store's (archived_pages.py), into every view,
the audit and chain views included: the file is the only copy an auditor queries (no segments beside it),
and the chain links archived events only past what its seed covers (projections/chain.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.application import Application

from application.access import Access
from domain.robot import AdminAction, Robot
from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.opening import APPLICATIONS, application_classes, backend, open_view
from infra.projection_runtime.replay import replay
from infra.projection_runtime.workers import PAGE_SIZE
from projections.catalog import PROJECTION_NAMES, SQLITE, spec

log = logging.getLogger(__name__)

INFO_TABLE, COUNTS_TABLE = "replay_info", "replay_events"
ACCESS_TABLES = (
    "CREATE TABLE robots (username TEXT PRIMARY KEY, org TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, "
    "repositories TEXT NOT NULL, disabled INTEGER NOT NULL, deleted INTEGER NOT NULL)",
    "CREATE TABLE admin_log (id INTEGER PRIMARY KEY, actor TEXT NOT NULL, action TEXT NOT NULL, org TEXT NOT NULL, "
    "target TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL)",
)
_SCAN = 1000
ROBOT_EVENTS = (Robot.Created, Robot.Reinstated, Robot.RepositoriesChanged, Robot.TokenRotated, Robot.Disabled,
                Robot.Enabled, Robot.Deleted)


class ReplayTargetExists(FileExistsError):
    """The output file exists and --force was not given."""


@dataclass
class ReplayReport:
    out: Path
    until: float
    events: dict[str, dict[str, int]] = field(default_factory=dict)   # projection -> application -> events used


def replay_until(env: dict, until: float, out: Path, force: bool = False, page_size: int = PAGE_SIZE,
                 archive: ArchivedRecords | None = None) -> ReplayReport:
    """Write the views as of `until` (epoch seconds; each event's recorded timestamp) into the SQLite file `out`.

    `archive`: where the pulls archived by retention are read (without it, the file lacks them)."""
    out = Path(out).absolute()
    if out.exists() and (not force or out.is_dir()):
        raise ReplayTargetExists(f"{out} exists; pass --force to replace it" if not out.is_dir()
                                 else f"{out} is a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".entrepot-replay-", dir=out.parent))
    report = ReplayReport(out, until)
    try:
        apps = {name: cls(env=env) for name, cls in APPLICATIONS.items()}
        try:
            for name in PROJECTION_NAMES:
                report.events[name] = _replay_view(name, env, apps, scratch, until, page_size, archive)
        finally:
            for app in apps.values():
                app.close()
        assembled = scratch / "replay.db"
        with closing(sqlite3.connect(assembled)) as db:
            for name in PROJECTION_NAMES:
                _copy_tables(db, scratch / f"{name}.db")
            report.events["access"] = _access_tables(db, env, until)
            _describe(db, report, backend(env))
            db.commit()
        os.replace(assembled, out)   # the same directory: atomic, and a failed replay leaves no half file
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("replayed the event store up to %s into %s: %s", iso(until), out, report.events)
    return report


def _replay_view(name: str, env: dict, apps: dict[str, Application], scratch: Path, until: float,
                 page_size: int, archive: ArchivedRecords | None) -> dict[str, int]:
    """One view, replayed into a SQLite file of its own (each view's file has its own tracking table)."""
    prefix = name.upper()
    view = open_view(name, {**env, f"{prefix}_PERSISTENCE_MODULE": SQLITE,
                            f"{prefix}_SQLITE_DBNAME": str(scratch / f"{name}.db")})
    # This copy is the only one the file has: it holds the archived pulls too (module docstring).
    view.takes_archived = True
    # What a view keeps by age (analytics' minute buckets), it keeps as it did at the instant.
    view.now = lambda: until
    try:
        topics = spec(name).handled_topics()
        return {cls.name: replay(view, apps[cls.name], topics, page_size, until=until, archive=archive)
                for cls in application_classes(name)}
    finally:
        view.close()


def _copy_tables(db: sqlite3.Connection, source: Path) -> None:
    """The view's tables and indexes (not its tracking) into the output file, rows and all."""
    db.execute("ATTACH DATABASE ? AS view", (str(source),))
    try:
        objects = db.execute("SELECT type, name, sql FROM view.sqlite_master WHERE sql IS NOT NULL "
                             "AND name NOT LIKE 'sqlite_%' AND tbl_name != 'tracking' "
                             "ORDER BY type = 'index', rowid").fetchall()
        for kind, name, ddl in objects:
            if kind == "table" and db.execute("SELECT 1 FROM main.sqlite_master WHERE name = ?", (name,)).fetchone():
                raise RuntimeError(f"two views have a table named {name!r}: the replay file cannot hold both")
            db.execute(ddl)   # unqualified: made in the output file
            if kind == "table":
                db.execute(f'INSERT INTO main."{name}" SELECT * FROM view."{name}"')
        db.commit()
    finally:
        db.execute("DETACH DATABASE view")


def _access_tables(db: sqlite3.Connection, env: dict, until: float) -> dict[str, int]:
    """Robots and org admins as they stood (no token hashes), and the admin log, from the Access events."""
    for ddl in ACCESS_TABLES:
        db.execute(ddl)
    robots: dict[Any, Robot] = {}
    actions = 0
    try:
        access = Access(env=env)
    except OSError:   # an embedded env without access.db (tools and benches): the tables stay empty
        log.warning("replay: no Access event store configured; robots and admin_log are empty")
        return {}
    try:
        for notification, event in _events(access):
            if event.timestamp.timestamp() > until:
                continue
            if isinstance(event, AdminAction.Recorded):
                db.execute("INSERT INTO admin_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (notification.id, event.actor, event.action, event.org, event.target, event.detail,
                            event.at))
                actions += 1
            elif isinstance(event, ROBOT_EVENTS):
                # The aggregate's own mutators, event by event: the state as of the last one kept.
                robots[event.originator_id] = event.mutate(robots.get(event.originator_id))
    finally:
        access.close()
    db.executemany("INSERT INTO robots VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(r.username, r.org, r.name, r.role, json.dumps(list(r.repositories)), int(r.disabled),
                     int(r.deleted)) for r in robots.values() if r is not None])
    return {"Access": actions + len(robots)}


def _events(app: Application) -> Iterator[tuple[Any, Any]]:
    start = 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=_SCAN)
        for notification in page:
            yield notification, app.mapper.to_domain_event(notification)
        if len(page) < _SCAN:
            return
        start = page[-1].id + 1


def _describe(db: sqlite3.Connection, report: ReplayReport, source: str) -> None:
    """What the file is: the instant, when and from what it was made, and the events each view used."""
    db.execute(f"CREATE TABLE {INFO_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany(f"INSERT INTO {INFO_TABLE} VALUES (?, ?)", [
        ("until", iso(report.until)), ("until_epoch", repr(report.until)), ("made_at", iso(time.time())),
        ("source", "postgresql" if source.endswith("postgres") else "sqlite"),
        ("note", "events recorded at or before `until` (their event-store timestamps), replayed into the views"),
    ])
    db.execute(f"CREATE TABLE {COUNTS_TABLE} (projection TEXT NOT NULL, application TEXT NOT NULL, "
               "events INTEGER NOT NULL, PRIMARY KEY (projection, application))")
    db.executemany(f"INSERT INTO {COUNTS_TABLE} VALUES (?, ?, ?)",
                   [(name, app, n) for name, apps in report.events.items() for app, n in apps.items()])


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
