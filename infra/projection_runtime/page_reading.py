"""Reading a page of an application's notifications for a replay, faster than the recorders' own.

A rebuild reads the whole log once per process (twice when a second process rebuilds some views), and
eventsourcing's SQLite `select_notifications` spent ~6.5 us of CPU per notification (1M pulls: ~6.5 s
per process): rows as `sqlite3.Row` read by name, `uuid.UUID(text)` (pure Python: strip, replace,
checks) and each `Notification` built through its frozen dataclass `__init__` (one `object.__setattr__`
per field). The fast path runs the recorder's own query (the same columns, filters and order) with
plain tuple rows, and builds the same objects directly: the UUID from the text's 16 bytes, the
notification with its fields' dict in the dataclass's order. Equal, field for field and type for type,
to what the recorder returns (tests/integration/test_page_reading.py). PostgreSQL likewise, with the
driver's tuple rows. Any other recorder class reads through the recorder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, SafeUUID

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row

_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown


def select_page(recorder: Any, start: int, limit: int, stop: int, topics: Sequence[str] = ()) -> list[Notification]:
    """The notifications after `start` up to `stop` (of `topics`, when given), at most `limit`, in order:
    `recorder.select_notifications(start, limit, stop, topics, inclusive_of_start=False)`."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite_page(recorder, start, limit, stop, topics)
    if isinstance(recorder, PostgresApplicationRecorder):
        bounded = getattr(recorder, "_bounded", None)   # infra/bounded_postgres.py's failure handling
        if bounded is not None:
            return bounded(_postgres_page, recorder, start, limit, stop, topics)
        return _postgres_page(recorder, start, limit, stop, topics)
    return list(recorder.select_notifications(start=start, limit=limit, stop=stop, topics=list(topics),
                                              inclusive_of_start=False))


def _postgres_page(recorder: PostgresApplicationRecorder, start: int, limit: int, stop: int,
                   topics: Sequence[str]) -> list[Notification]:
    """The recorder's query with tuple rows (its connections make a dict per row), the notifications built
    as _sqlite_page builds them: ~4 % of a PostgreSQL rebuild's GIL time went to the dicts and the
    dataclass's __init__ (py-spy, 1M pulls). Rows come in PostgreSQL's binary format: the state's bytea as
    its bytes (text sends it as hex, which the server writes and the driver decodes: twice the bytes) and
    the UUID as its 16 bytes. 2M pulls of the 10M store, page by page: 2.7-2.9 s against 5.4-7.3 s, this
    process's CPU 1.8-1.9 s against 3.8-4.6 s (bench/results/2026-12-01-rebuild-s15.md). The same values."""
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    statement = (f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table} "
                 "WHERE notification_id > %s AND notification_id <= %s ")
    params: list[Any] = [start, stop]
    if topics:
        statement += "AND topic = ANY(%s) "
        params.append(list(topics))
    statement += "ORDER BY notification_id LIMIT %s"
    params.append(limit)
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row, binary=True) as cursor:
        cursor.execute(statement.encode(), params, prepare=True)
        rows = cursor.fetchall()
    page = []
    append = page.append
    for notification_id, originator_id, version, topic, state in rows:
        notification = _new(Notification)
        _set(notification, "__dict__", {"originator_id": originator_id, "originator_version": version, "topic": topic,
                                        "state": state if type(state) is bytes else bytes(state),
                                        "id": notification_id})
        append(notification)
    return page


def _sqlite_page(recorder: SQLiteApplicationRecorder, start: int, limit: int, stop: int,
                 topics: Sequence[str]) -> list[Notification]:
    statement = (f"SELECT rowid, originator_id, originator_version, topic, state FROM {recorder.events_table_name} "
                 "WHERE rowid>? AND rowid<=? ")
    params: list[Any] = [start, stop]
    if topics:
        statement += f"AND topic IN ({','.join('?' * len(topics))}) "
        params += list(topics)
    statement += "ORDER BY rowid LIMIT ?"
    params.append(limit)
    uuid_ids = recorder.datastore.originator_id_type == "uuid"
    with recorder.datastore.transaction(commit=False) as c:
        cursor = c.sqlite_cursor
        cursor.row_factory = None   # plain tuples: this cursor only (the connection's rows stay sqlite3.Row)
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    page = []
    append = page.append
    for rowid, originator_id, version, topic, state in rows:
        notification = _new(Notification)
        # The dataclass's field order (StoredEvent's, then id), as its __init__ would fill the dict.
        _set(notification, "__dict__", {"originator_id": _uuid(originator_id) if uuid_ids else originator_id,
                                        "originator_version": version, "topic": topic, "state": state,
                                        "id": rowid})
        append(notification)
    return page


def _uuid(text: str) -> UUID:
    """UUID(text): directly from its 16 bytes for the canonical spellings, through UUID() for anything else
    (which also raises what UUID() raises)."""
    try:
        digits = text.replace("-", "")
        # 32 characters that make 16 bytes: hex digits only (fromhex skips whitespace, UUID() does not).
        raw = bytes.fromhex(digits) if len(digits) == 32 else b""
    except (ValueError, AttributeError, TypeError):
        return UUID(text)
    if len(raw) != 16:
        return UUID(text)
    uuid = _new(UUID)
    _set(uuid, "int", int.from_bytes(raw, "big"))
    _set(uuid, "is_safe", _UNKNOWN)
    return uuid
