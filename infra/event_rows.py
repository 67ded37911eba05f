"""Deleting archived events from the event store: eventsourcing has no call for it, so one SQL statement per backend.

Safe for the notification log and the views' tracking: a `Pull` is an aggregate with exactly one
event, so deleting its row removes the whole aggregate; notification ids are never reused on
PostgreSQL (bigserial), and on SQLite (the rowid) the archiver never deletes the log's last row,
the only one whose id SQLite would hand out again. Views track the last id they processed and read
`id > position`, so gaps below it change nothing. Never VACUUM `pulls.db` by hand: SQLite may
renumber rowids of a table without an INTEGER PRIMARY KEY.
"""

from __future__ import annotations

import sqlite3

from psycopg import sql

from infra.persistence import connect


class SqlEventRows:
    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def delete(self, application: str, topic: str, first: int, last: int) -> int:
        if self._env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
            table = sql.Identifier(self._env["POSTGRES_SCHEMA"], f"{application.lower()}_events")
            with connect(self._env) as conn:
                return conn.execute(sql.SQL("DELETE FROM {} WHERE notification_id BETWEEN %s AND %s AND topic = %s")
                                    .format(table), (first, last, topic)).rowcount
        path = self._env[f"{application.upper()}_SQLITE_DBNAME"]
        conn = sqlite3.connect(path, timeout=30)
        try:
            with conn:
                return conn.execute("DELETE FROM stored_events WHERE rowid BETWEEN ? AND ? AND topic = ?",
                                    (first, last, topic)).rowcount
        finally:
            conn.close()
