"""The history view: what each tag resolved to, interval by interval, so a past instant is one indexed lookup.

A row is one resolution of one tag: the digest it pointed to `since` an instant and `until` the
next change (NULL while it still points there). Times are the events' own domain times
(`checked_at` of a resolution, `at` of a drop), the clock the audit's `at` uses too; org deletes
and re-registrations carry none, so their event timestamp stands in.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.cache import TagResolution
from domain.org import CacheOrg
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView

ORG_DELETED = "org deleted"


@dataclass(frozen=True)
class TagInterval:
    org: str
    repository: str
    tag: str
    seq: int               # the notification id of the event that opened the interval: orders equal instants
    since: float
    until: float | None    # None: the tag still resolves to `digest`
    digest: str
    media_type: str
    opened_by: str         # resolved | retargeted | revalidated (seen again after a drop or delete) | org restored
    ended_by: str | None   # retargeted | a drop's reason (flush, quota, ...) | org deleted; None while open


COLUMNS = "org, repository, tag, seq, since, until, digest, media_type, opened_by, ended_by"


class HistoryView(View):
    name = "history"
    handles = (TagResolution.Resolved, TagResolution.Retargeted, TagResolution.Revalidated, TagResolution.Dropped,
               CacheOrg.Registered, CacheOrg.Reconfigured, CacheOrg.Deleted)
    follows = ("Registry",)
    # A bulk rebuild gathers the tag events (HistoryGathering), and each backend writes a gathering in a statement
    # to close the copy's intervals and one to add the new ones, instead of one or two per event (PostgreSQL:
    # ~1,700 events/s of a pipeline for 200,000 images, bench/results/2026-12-02-rebuild-s19.md; SQLite: ~82 s of
    # the critical second process at 10M pulls, bench/results/2026-12-03-rebuild-s25.md). The org events touch
    # every tag of an org: a page holding one writes the gathering first, then the page event by event.
    gathers = (TagResolution.Resolved, TagResolution.Retargeted, TagResolution.Revalidated, TagResolution.Dropped)

    def gathering(self) -> HistoryGathering:
        return HistoryGathering()

    def gather(self, gathered: HistoryGathering, event: Any, tracking: Tracking) -> None:
        gathered.add(event, tracking.notification_id)

    def write_gathered(self, c: Any, gathered: HistoryGathering) -> None:
        wanted = gathered.needs_stored()
        closes, rows = gathered.intervals(self.last_stored(c, wanted) if wanted else {})
        if closes:   # before the new rows, which are open too
            self.close_stored(c, closes)
        if rows:
            self.add_intervals(c, rows)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        seq = tracking.notification_id
        if isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            key = (event.org, event.repository, event.tag)
            self.end(c, *key, event.checked_at, "retargeted")
            self.begin(c, *key, seq, event.checked_at, event.digest, event.media_type,
                      "resolved" if isinstance(event, TagResolution.Resolved) else "retargeted")
        elif isinstance(event, TagResolution.Revalidated):
            # Nothing changed, unless the tag had no open interval (its org was deleted, then restored
            # without a record of its own): then it is served again from this instant.
            self.open_if_closed(c, event.org, event.repository, event.tag, seq, event.checked_at, event.digest,
                                "revalidated")
        elif isinstance(event, TagResolution.Dropped):
            self.end(c, event.org, event.repository, event.tag, event.at, event.reason)
        elif isinstance(event, CacheOrg.Deleted):
            # The org's tags stay in the event store but are served no more.
            self.close_org(c, event.name, event.timestamp.timestamp())
        elif isinstance(event, (CacheOrg.Registered, CacheOrg.Reconfigured)):
            # In histories written before org generations either could undelete an org, its tags resolving
            # again to what they pointed at when it was deleted. Since then a deleted name is taken again
            # by CacheOrg.Recreated (not followed here): a new generation, which starts with no tags.
            self.restore_org(c, event.name, seq, event.timestamp.timestamp())

    # -- storage: each backend's SQL ------------------------------------------------------------------
    @abstractmethod
    def end(self, c: Any, org: str, repository: str, tag: str, until: float, ended_by: str) -> None:
        """End the tag's open interval, if it has one."""

    @abstractmethod
    def begin(self, c: Any, org: str, repository: str, tag: str, seq: int, since: float, digest: str,
             media_type: str, opened_by: str) -> None: ...

    @abstractmethod
    def open_if_closed(self, c: Any, org: str, repository: str, tag: str, seq: int, since: float, digest: str,
                       opened_by: str) -> None:
        """Open an interval (media type from the tag's last one) unless one is open."""

    @abstractmethod
    def close_org(self, c: Any, org: str, until: float) -> None: ...

    @abstractmethod
    def restore_org(self, c: Any, org: str, seq: int, since: float) -> None:
        """Reopen every tag whose last interval ended with the org's delete."""

    # -- a bulk rebuild's gathering ------------------------------------------------------------------------
    @abstractmethod
    def last_stored(self, c: Any, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[bool, str]]:
        """(open, media type) of the copy's last interval of each tag (org, repository, tag) that has one."""

    @abstractmethod
    def close_stored(self, c: Any, closes: list[tuple]) -> None:
        """End the copy's open interval of each (org, repository, tag, until, ended_by), where it has one."""

    @abstractmethod
    def add_intervals(self, c: Any, rows: list[tuple]) -> None:
        """Insert intervals, given in COLUMNS' order."""

    # -- queries ------------------------------------------------------------------------------------
    @abstractmethod
    def at(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        """The interval holding `at` (since <= at < until); None when the tag resolved to nothing then."""

    @abstractmethod
    def before(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        """The last interval that began at or before `at` (the one holding it, or the one it follows)."""

    @abstractmethod
    def after(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        """The first interval that began after `at`."""

    @abstractmethod
    def previous(self, interval: TagInterval) -> TagInterval | None:
        """The interval of the same tag just before `interval`."""

    @abstractmethod
    def of_digest(self, digest: str, org: str | None = None, limit: int = 1000) -> list[TagInterval]:
        """Every interval in which some tag resolved to `digest`, oldest first (at most `limit`)."""


# One SQL text for both backends where they agree; `?` becomes `%s` for PostgreSQL, {tag_history} its table.
_BY_TAG = "org = ? AND repository = ? AND tag = ?"
_CLOSE = f"UPDATE {{tag_history}} SET until = ?, ended_by = ? WHERE {_BY_TAG} AND until IS NULL"
_ADD = f"INSERT INTO {{tag_history}} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LAST_OF_TAG = f"SELECT until IS NULL, media_type FROM {{tag_history}} WHERE {_BY_TAG} ORDER BY seq DESC LIMIT 1"
_OPEN = f"INSERT INTO {{tag_history}} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL)"
_OPEN_IF_CLOSED = (
    f"INSERT INTO {{tag_history}} ({COLUMNS}) SELECT ?, ?, ?, ?, ?, NULL, ?, "
    f"coalesce((SELECT media_type FROM {{tag_history}} WHERE {_BY_TAG} ORDER BY seq DESC LIMIT 1), ''), ?, NULL "
    f"WHERE NOT EXISTS (SELECT 1 FROM {{tag_history}} WHERE {_BY_TAG} AND until IS NULL)")
# An org event carries no domain time, so its timestamp stands in; never before the interval began
# (a test clock ahead of the wall clock, a replica's skew).
_CLOSE_ORG = ("UPDATE {tag_history} SET until = CASE WHEN ? > since THEN ? ELSE since END, ended_by = ? "
              "WHERE org = ? AND until IS NULL")
_RESTORE_ORG = (
    f"INSERT INTO {{tag_history}} ({COLUMNS}) SELECT org, repository, tag, ?, ?, NULL, digest, media_type, "
    f"'org restored', NULL FROM {{tag_history}} h WHERE org = ? AND ended_by = ? AND seq = (SELECT max(seq) "
    f"FROM {{tag_history}} x WHERE x.org = h.org AND x.repository = h.repository AND x.tag = h.tag)")
_BEFORE = f"SELECT {COLUMNS} FROM {{tag_history}} WHERE {_BY_TAG} AND since <= ? ORDER BY since DESC, seq DESC LIMIT 1"
_AFTER = f"SELECT {COLUMNS} FROM {{tag_history}} WHERE {_BY_TAG} AND since > ? ORDER BY since, seq LIMIT 1"
_OF_DIGEST = f"SELECT {COLUMNS} FROM {{tag_history}} WHERE digest = ? ORDER BY since, seq LIMIT ?"
_OF_DIGEST_IN_ORG = f"SELECT {COLUMNS} FROM {{tag_history}} WHERE digest = ? AND org = ? ORDER BY since, seq LIMIT ?"
_PREVIOUS = (f"SELECT {COLUMNS} FROM {{tag_history}} WHERE {_BY_TAG} AND (since < ? OR (since = ? AND seq < ?)) "
             "ORDER BY since DESC, seq DESC LIMIT 1")


def _holding(interval: TagInterval | None, at: float) -> TagInterval | None:
    return interval if interval is not None and (interval.until is None or at < interval.until) else None


class _Queries:
    """The queries, over the backend's `_rows(sql, params)`."""

    def at(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        return _holding(self.before(org, repository, tag, at), at)

    def before(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        return self._one(_BEFORE, (org, repository, tag, at))

    def after(self, org: str, repository: str, tag: str, at: float) -> TagInterval | None:
        return self._one(_AFTER, (org, repository, tag, at))

    def previous(self, interval: TagInterval) -> TagInterval | None:
        return self._one(_PREVIOUS, (interval.org, interval.repository, interval.tag, interval.since,
                                     interval.since, interval.seq))

    def of_digest(self, digest: str, org: str | None = None, limit: int = 1000) -> list[TagInterval]:
        if org is None:
            rows = self._rows(_OF_DIGEST, (digest, limit))
        else:
            rows = self._rows(_OF_DIGEST_IN_ORG, (digest, org, limit))
        return [TagInterval(*row) for row in rows]

    def _one(self, sql: str, params: tuple) -> TagInterval | None:
        rows = self._rows(sql, params)
        return TagInterval(*rows[0]) if rows else None

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        raise NotImplementedError


class SqliteHistoryView(_Queries, SqliteView, HistoryView):
    tables = ("tag_history",)
    schema = (
        "CREATE TABLE IF NOT EXISTS tag_history (org TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, "
        "seq INTEGER NOT NULL, since REAL NOT NULL, until REAL, digest TEXT NOT NULL, media_type TEXT NOT NULL, "
        "opened_by TEXT NOT NULL, ended_by TEXT, PRIMARY KEY (org, repository, tag, seq)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS tag_history_since ON tag_history (org, repository, tag, since)",
        "CREATE INDEX IF NOT EXISTS tag_history_digest ON tag_history (digest)",
    )

    @staticmethod
    def _sql(text: str) -> str:
        return text.replace("{tag_history}", "tag_history")

    def end(self, c: SQLiteCursor, org, repository, tag, until, ended_by) -> None:
        c.execute(self._sql(_CLOSE), (until, ended_by, org, repository, tag))

    def begin(self, c: SQLiteCursor, org, repository, tag, seq, since, digest, media_type, opened_by) -> None:
        c.execute(self._sql(_OPEN), (org, repository, tag, seq, since, digest, media_type, opened_by))

    def open_if_closed(self, c: SQLiteCursor, org, repository, tag, seq, since, digest, opened_by) -> None:
        c.execute(self._sql(_OPEN_IF_CLOSED), (org, repository, tag, seq, since, digest, org, repository, tag,
                                               opened_by, org, repository, tag))

    def close_org(self, c: SQLiteCursor, org, until) -> None:
        c.execute(self._sql(_CLOSE_ORG), (until, until, ORG_DELETED, org))

    def restore_org(self, c: SQLiteCursor, org, seq, since) -> None:
        c.execute(self._sql(_RESTORE_ORG), (seq, since, org, ORG_DELETED))

    def last_stored(self, c: SQLiteCursor, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[bool, str]]:
        stored = {}
        for key in keys:   # one primary-key probe each: only tags revalidated before anything opened one here
            c.execute(self._sql(_LAST_OF_TAG), key)
            row = c.fetchone()
            if row is not None:
                stored[key] = (bool(row[0]), row[1])
        return stored

    def close_stored(self, c: SQLiteCursor, closes: list[tuple]) -> None:
        c.executemany(self._sql(_CLOSE), [(until, ended_by, *key) for *key, until, ended_by in closes])

    def add_intervals(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql(_ADD), rows)

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        return [tuple(row) for row in self._query(self._sql(sql), params)]


class HistoryGathering:
    """A bulk rebuild's tag events, per tag in log order (org events, which touch every tag of an org, are not
    gathered: a page holding one writes the gathering first). `intervals` folds them into the rows a tag's
    events would leave, over what the copy held before: its last interval, when the fold needs it."""

    def __init__(self) -> None:
        # (org, repository, tag) -> [("end", until, ended_by) | ("begin", seq, since, digest, media_type,
        # opened_by) | ("reopen", seq, since, digest, opened_by)]
        self.steps: dict[tuple[str, str, str], list[tuple]] = {}

    def add(self, event: Any, seq: int) -> None:
        steps = self.steps.setdefault((event.org, event.repository, event.tag), [])
        if isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            steps.append(("end", event.checked_at, "retargeted"))
            steps.append(("begin", seq, event.checked_at, event.digest, event.media_type,
                          "resolved" if isinstance(event, TagResolution.Resolved) else "retargeted"))
        elif isinstance(event, TagResolution.Revalidated):
            steps.append(("reopen", seq, event.checked_at, event.digest, "revalidated"))
        elif isinstance(event, TagResolution.Dropped):
            steps.append(("end", event.at, event.reason))

    def needs_stored(self) -> list[tuple[str, str, str]]:
        """The tags whose fold depends on the copy's last interval (whether it is open, its media type): a
        revalidation before anything of theirs here opened one."""
        wanted = []
        for key, steps in self.steps.items():
            for step in steps:
                if step[0] != "end":
                    if step[0] == "reopen":
                        wanted.append(key)
                    break
        return wanted

    def intervals(self, stored: dict[tuple[str, str, str], tuple[bool, str]]) -> tuple[list[tuple], list[tuple]]:
        """(the copy's open intervals to close: (org, repository, tag, until, ended_by); the new rows in COLUMNS'
        order). `stored`: (open, media type) of the copy's last interval of each of needs_stored()."""
        closes, rows = [], []
        for key, steps in self.steps.items():
            # The copy's last interval: open or not, and its media type (read only where needed).
            stored_open, stored_media = stored.get(key, (False, ""))
            stored_closed = False
            mine: list[list] = []   # this tag's new rows: [seq, since, until, digest, media_type, opened_by, ended_by]
            for step in steps:
                if step[0] == "end":
                    if mine:
                        if mine[-1][2] is None:   # open: no `until` yet
                            mine[-1][2], mine[-1][6] = step[1], step[2]
                    elif not stored_closed:   # the copy's open interval, if it has one
                        closes.append((*key, step[1], step[2]))
                        stored_closed = True
                elif step[0] == "begin":
                    mine.append([step[1], step[2], None, step[3], step[4], step[5], None])
                else:   # reopen: unless an interval is open, from this instant, with the last one's media type
                    if mine:
                        if mine[-1][2] is not None:
                            mine.append([step[1], step[2], None, step[3], mine[-1][4], step[4], None])
                    elif stored_closed or not stored_open:
                        mine.append([step[1], step[2], None, step[3], stored_media, step[4], None])
            rows.extend((*key, *row) for row in mine)
        return closes, rows


class PostgresHistoryView(_Queries, PostgresView, HistoryView):
    projection = "history"
    pipelined = True   # its writes read nothing back
    _last_stored = ("SELECT DISTINCT ON (h.org, h.repository, h.tag) h.org, h.repository, h.tag, h.until IS NULL "
                    "AS open, h.media_type FROM {source} AS v(org, repository, tag) "
                    "JOIN {tag_history} h ON h.org = v.org AND h.repository = v.repository AND h.tag = v.tag "
                    "ORDER BY h.org, h.repository, h.tag, h.seq DESC")
    _close_stored = ("UPDATE {tag_history} h SET until = v.until, ended_by = v.ended_by FROM {source} AS v(org, "
                     "repository, tag, until, ended_by) WHERE h.org = v.org AND h.repository = v.repository "
                     "AND h.tag = v.tag AND h.until IS NULL")
    _add_rows = f"INSERT INTO {{tag_history}} ({COLUMNS}) SELECT * FROM {{source}}"
    _row_types = ("text", "text", "text", "bigint", "double precision", "double precision", "text", "text", "text",
                  "text")

    def last_stored(self, c: Cursor, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[bool, str]]:
        stored = {}
        for row in self.write_rows(c, self._last_stored, ("text",) * 3, keys, returning=True):
            org, repository, tag, is_open, media_type = row.values()
            stored[(org, repository, tag)] = (is_open, media_type)
        return stored

    def close_stored(self, c: Cursor, closes: list[tuple]) -> None:
        self.write_rows(c, self._close_stored, ("text", "text", "text", "double precision", "text"), closes)

    def add_intervals(self, c: Cursor, rows: list[tuple]) -> None:
        self.write_rows(c, self._add_rows, self._row_types, rows)

    tables = ("tag_history",)
    indexes = ("tag_history_since", "tag_history_digest")
    schema = (
        "CREATE TABLE IF NOT EXISTS {tag_history} (org text NOT NULL, repository text NOT NULL, tag text NOT NULL, "
        "seq bigint NOT NULL, since double precision NOT NULL, until double precision, digest text NOT NULL, "
        "media_type text NOT NULL, opened_by text NOT NULL, ended_by text, PRIMARY KEY (org, repository, tag, seq))",
        "CREATE INDEX IF NOT EXISTS {tag_history_since} ON {tag_history} (org, repository, tag, since)",
        "CREATE INDEX IF NOT EXISTS {tag_history_digest} ON {tag_history} (digest)",
    )

    @staticmethod
    def _pg(text: str) -> str:
        return text.replace("?", "%s")

    def end(self, c: Cursor, org, repository, tag, until, ended_by) -> None:
        c.execute(self.sql(self._pg(_CLOSE)), (until, ended_by, org, repository, tag), prepare=True)

    def begin(self, c: Cursor, org, repository, tag, seq, since, digest, media_type, opened_by) -> None:
        c.execute(self.sql(self._pg(_OPEN)), (org, repository, tag, seq, since, digest, media_type, opened_by),
                  prepare=True)

    def open_if_closed(self, c: Cursor, org, repository, tag, seq, since, digest, opened_by) -> None:
        c.execute(self.sql(self._pg(_OPEN_IF_CLOSED)), (org, repository, tag, seq, since, digest, org, repository,
                                                        tag, opened_by, org, repository, tag), prepare=True)

    def close_org(self, c: Cursor, org, until) -> None:
        c.execute(self.sql(self._pg(_CLOSE_ORG)), (until, until, ORG_DELETED, org))

    def restore_org(self, c: Cursor, org, seq, since) -> None:
        c.execute(self.sql(self._pg(_RESTORE_ORG)), (seq, since, org, ORG_DELETED))

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        return self._query(self._pg(sql), params)
