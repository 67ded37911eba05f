"""The chain view: the audit hash chain (domain/audit_chain.py) over the stored pull and admin events.

It takes the stored notifications as they are (`stored = True`): a link covers the bytes in the
database, not a decoded event. Per application it keeps one row per chained event (position, event
id, version, topic, ordinal, link) and the head (`chain_heads`), each page in one transaction with
its tracking position. Archiving (part 2 of issue 14) removes old rows; the head stays.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Notification, Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

import json

from eventsourcing.utils import get_topic

from domain.archive import ArchiveSegment
from domain.audit_chain import CHAINED_APPLICATIONS, ChainHead, chained, empty_head, links_of
from projections.base import Batch, SqliteView, View
from projections.postgres_view import PostgresView
from projections.sqlite_rows import insert_rows


@dataclass(frozen=True)
class ChainRow:
    application: str
    position: int     # the event's notification id
    event_id: str     # its originator id
    version: int      # its originator version
    topic: str
    count: int        # its ordinal in the application's chain (1 for the first)
    link: str         # hex


ROW_COLUMNS = "application, position, event_id, version, topic, n, link"
ARCHIVED_TOPIC = get_topic(ArchiveSegment.Written)


class ChainView(View):
    name = "chain"
    # Access first: a rebuild replays the archive records (ArchiveSegment.Written) before the pulls, so the
    # Pulls chain resumes after the archived events (`chain_seeds`) instead of starting over without them.
    follows = ("Access", "Pulls")
    stored: ClassVar[bool] = True    # the worker hands over stored notifications, not domain events
    # A rebuild seeds the Pulls chain from the archive records (ArchiveSegment.Written): the archived events
    # are not hashed again (their links are in the segments). A point-in-time replay feeds them anyway, as
    # the chain stood before they were archived; process_page skips those its seed already covers.
    takes_archived: ClassVar[bool] = False
    # A bulk rebuild gathers the chain's pages too (the stored notifications as they come, any topic) and
    # links them when the gathering is written: process_page over the pages in order, in one transaction, so
    # the same rows and head as page by page, in 10 transactions for 1M pulls instead of 200. Each page's
    # transaction cost head and seed reads, a commit and (SQLite) a WAL checkpoint every few pages, and
    # each statement's GIL release a wait to get it back from the child's other threads.
    gathers: ClassVar[tuple[type, ...]] = (Notification,)

    def archive_covered(self, application: str) -> int | None:
        # The seed comes from Access (ArchiveSegment.Written): until it covers the archive, the Pulls worker
        # of a new or emptied view must wait, or it would start a chain of its own from the first stored pull.
        seed = self.seed(application)
        return seed.position if seed is not None else 0

    @classmethod
    def handled_topics(cls) -> list[str]:
        return []   # every topic of Access is chained: an offline replay reads the whole log, the view filters

    def process_page(self, c: Any, batch: Batch) -> None:
        if not batch:
            return
        application = batch[0][1].application_name   # a page comes from one application's log
        for stored, _ in batch:
            if stored.topic == ARCHIVED_TOPIC:
                archived = json.loads(stored.state)
                self.put_seed(c, ChainHead(archived["application"], archived["last"], archived["head_count"],
                                           archived["head_link"]))
        head = self.read_head(c, application)
        seed = self.read_seed(c, application)
        if seed is not None and seed.position > head.position:
            head = seed   # the events before it were archived (and their rows removed): the chain goes on from there
        link, count, rows = bytes.fromhex(head.link), head.count, []
        for stored, tracking in batch:
            if tracking.notification_id > head.position:   # at or before a seed: archived and linked already
                self.process_event(rows, stored, tracking)
        out = []
        for (stored, position), (link, event_id) in zip(rows, links_of(link, application, (r for r, _ in rows))):
            count += 1
            if type(stored.originator_id) is not UUID:
                event_id = str(stored.originator_id)   # the row keeps a text id as stored; the link, its UUID's text
            out.append((application, position, event_id, stored.originator_version, stored.topic, count, link.hex()))
        if out:
            self.add_links(c, out)
            last = out[-1]
            self.put_head(c, ChainHead(application, last[1], last[5], last[6]))

    def gathering(self) -> list[tuple[Any, Tracking]]:
        return []

    def gather(self, gathered: list[tuple[Any, Tracking]], event: Any, tracking: Tracking) -> None:
        gathered.append((event, tracking))

    def write_gathered(self, c: Any, gathered: list[tuple[Any, Tracking]]) -> None:
        self.process_page(c, gathered)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the page's list here; `event` is a stored notification (the view is `stored`).
        if chained(tracking.application_name, event.topic):
            c.append((event, tracking.notification_id))

    @abstractmethod
    def read_head(self, c: Any, application: str) -> ChainHead: ...

    @abstractmethod
    def put_head(self, c: Any, head: ChainHead) -> None: ...

    @abstractmethod
    def read_seed(self, c: Any, application: str) -> ChainHead | None: ...

    @abstractmethod
    def put_seed(self, c: Any, head: ChainHead) -> None: ...

    @abstractmethod
    def add_links(self, c: Any, rows: list[tuple]) -> None: ...

    @abstractmethod
    def head(self, application: str) -> ChainHead:
        """The application's chain head as this view holds it."""

    @abstractmethod
    def seed(self, application: str) -> ChainHead | None:
        """Where the application's chain goes on after its archived events (None: nothing archived seen)."""

    def heads(self) -> list[ChainHead]:
        return [self.head(application) for application in CHAINED_APPLICATIONS]  # Pulls, then Access

    @abstractmethod
    def links(self, application: str, after: int = 0, limit: int = 1000) -> list[ChainRow]:
        """The chain's rows after position `after`, in position order."""

    @abstractmethod
    def remove_links(self, application: str, upto: int) -> int:
        """Delete the rows at or below `upto` (archived); the head stays. Returns how many went."""


def _head(application: str, row: Any) -> ChainHead:
    return empty_head(application) if row is None else ChainHead(application, *row)


class SqliteChainView(SqliteView, ChainView):
    tables = ("chain_links", "chain_heads", "chain_seeds")
    schema = (
        "CREATE TABLE IF NOT EXISTS chain_links (application TEXT NOT NULL, position INTEGER NOT NULL, "
        "event_id TEXT NOT NULL, version INTEGER NOT NULL, topic TEXT NOT NULL, n INTEGER NOT NULL, "
        "link TEXT NOT NULL, PRIMARY KEY (application, position)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS chain_heads (application TEXT PRIMARY KEY, position INTEGER NOT NULL, "
        "n INTEGER NOT NULL, link TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS chain_seeds (application TEXT PRIMARY KEY, position INTEGER NOT NULL, "
        "n INTEGER NOT NULL, link TEXT NOT NULL)",
    )

    def read_seed(self, c: SQLiteCursor, application: str) -> ChainHead | None:
        c.execute("SELECT position, n, link FROM chain_seeds WHERE application = ?", (application,))
        row = c.fetchone()
        return None if row is None else ChainHead(application, *row)

    def put_seed(self, c: SQLiteCursor, head: ChainHead) -> None:
        c.execute("INSERT OR REPLACE INTO chain_seeds VALUES (?, ?, ?, ?)",
                  (head.application, head.position, head.count, head.link))

    def read_head(self, c: SQLiteCursor, application: str) -> ChainHead:
        c.execute("SELECT position, n, link FROM chain_heads WHERE application = ?", (application,))
        return _head(application, c.fetchone())

    def put_head(self, c: SQLiteCursor, head: ChainHead) -> None:
        c.execute("INSERT OR REPLACE INTO chain_heads VALUES (?, ?, ?, ?)",
                  (head.application, head.position, head.count, head.link))

    def add_links(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        insert_rows(c, "INSERT INTO chain_links VALUES", rows, 7)

    def head(self, application: str) -> ChainHead:
        rows = self._query("SELECT position, n, link FROM chain_heads WHERE application = ?", (application,))
        return _head(application, rows[0] if rows else None)

    def seed(self, application: str) -> ChainHead | None:
        rows = self._query("SELECT position, n, link FROM chain_seeds WHERE application = ?", (application,))
        return ChainHead(application, *tuple(rows[0])) if rows else None

    def links(self, application: str, after: int = 0, limit: int = 1000) -> list[ChainRow]:
        rows = self._query(f"SELECT {ROW_COLUMNS} FROM chain_links WHERE application = ? AND position > ? "
                           "ORDER BY position LIMIT ?", (application, after, limit))
        return [ChainRow(*row) for row in rows]

    def remove_links(self, application: str, upto: int) -> int:
        with self._writing() as c:
            c.execute("DELETE FROM chain_links WHERE application = ? AND position <= ?", (application, upto))
            return c.sqlite_cursor.rowcount


class PostgresChainView(PostgresView, ChainView):
    projection = "chain"
    tables = ("chain_links", "chain_heads", "chain_seeds")
    schema = (
        "CREATE TABLE IF NOT EXISTS {chain_links} (application text NOT NULL, position bigint NOT NULL, "
        "event_id text NOT NULL, version bigint NOT NULL, topic text NOT NULL, n bigint NOT NULL, "
        "link text NOT NULL, PRIMARY KEY (application, position))",
        "CREATE TABLE IF NOT EXISTS {chain_heads} (application text PRIMARY KEY, position bigint NOT NULL, "
        "n bigint NOT NULL, link text NOT NULL)",
        "CREATE TABLE IF NOT EXISTS {chain_seeds} (application text PRIMARY KEY, position bigint NOT NULL, "
        "n bigint NOT NULL, link text NOT NULL)",
    )

    def read_seed(self, c: Cursor, application: str) -> ChainHead | None:
        c.execute(self.sql("SELECT position, n, link FROM {chain_seeds} WHERE application = %s"), (application,))
        row = c.fetchone()
        return None if row is None else ChainHead(application, *row.values())

    def put_seed(self, c: Cursor, head: ChainHead) -> None:
        c.execute(self.sql("INSERT INTO {chain_seeds} VALUES (%s, %s, %s, %s) ON CONFLICT (application) DO UPDATE "
                           "SET position = excluded.position, n = excluded.n, link = excluded.link"),
                  (head.application, head.position, head.count, head.link))

    def read_head(self, c: Cursor, application: str) -> ChainHead:
        c.execute(self.sql("SELECT position, n, link FROM {chain_heads} WHERE application = %s"), (application,))
        row = c.fetchone()
        return _head(application, None if row is None else tuple(row.values()))

    def put_head(self, c: Cursor, head: ChainHead) -> None:
        c.execute(self.sql("INSERT INTO {chain_heads} VALUES (%s, %s, %s, %s) ON CONFLICT (application) DO UPDATE "
                           "SET position = excluded.position, n = excluded.n, link = excluded.link"),
                  (head.application, head.position, head.count, head.link))

    def add_links(self, c: Cursor, rows: list[tuple]) -> None:
        # Binary, each value in its column's type (ROW_COLUMNS'): as the audit view's COPY (projections/audit.py).
        with c.copy(self.sql(f"COPY {{chain_links}} ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)")) as copy:
            copy.set_types(["text", "bigint", "text", "bigint", "text", "bigint", "text"])
            write = copy.write_row
            for row in rows:
                write(row)

    def head(self, application: str) -> ChainHead:
        rows = self._query("SELECT position, n, link FROM {chain_heads} WHERE application = %s", (application,))
        return _head(application, rows[0] if rows else None)

    def seed(self, application: str) -> ChainHead | None:
        rows = self._query("SELECT position, n, link FROM {chain_seeds} WHERE application = %s", (application,))
        return ChainHead(application, *tuple(rows[0])) if rows else None

    def links(self, application: str, after: int = 0, limit: int = 1000) -> list[ChainRow]:
        rows = self._query(f"SELECT {ROW_COLUMNS} FROM {{chain_links}} WHERE application = %s AND position > %s "
                           "ORDER BY position LIMIT %s", (application, after, limit))
        return [ChainRow(*row) for row in rows]

    def remove_links(self, application: str, upto: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.sql("DELETE FROM {chain_links} WHERE application = %s AND position <= %s"),
                      (application, upto))
            return c.rowcount
