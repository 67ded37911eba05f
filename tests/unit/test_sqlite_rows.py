"""insert_rows: the same rows as executemany, in fewer statements (projections/sqlite_rows.py)."""

from __future__ import annotations

import sqlite3

import pytest

from projections.sqlite_rows import MAX_PARAMETERS, insert_rows


class CountingCursor:
    """A sqlite3 cursor that counts the statements stepped: execute once each, executemany once per row."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.cursor, self.steps = db.cursor(), 0

    def execute(self, sql, params=()):
        self.steps += 1
        return self.cursor.execute(sql, params)

    def executemany(self, sql, rows):
        rows = list(rows)
        self.steps += len(rows)
        return self.cursor.executemany(sql, rows)


def rows_of(n: int) -> list[tuple]:
    return [(i, f"text {i}", i / 3, None if i % 5 == 0 else b"\x00\x01" * (i % 4)) for i in range(n)]


@pytest.mark.parametrize(("count", "per_statement", "steps"), [
    (0, 500, 0), (1, 500, 1), (499, 500, 499), (500, 500, 1), (1234, 500, 2 + 234), (1000, 100, 10)])
def test_rows_arrive_as_executemany_puts_them_in_fewer_statements(count, per_statement, steps):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c REAL, d BLOB)")
    c = CountingCursor(db)
    insert_rows(c, "INSERT INTO t VALUES", rows_of(count), 4, per_statement=per_statement)
    assert db.execute("SELECT * FROM t ORDER BY a").fetchall() == rows_of(count)
    assert c.steps == steps


def test_wide_rows_stay_within_sqlites_parameter_limit():
    width = 200   # 500 rows of 200 columns would bind 100,000 parameters
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t ({', '.join(f'c{i}' for i in range(width))})")
    rows = [tuple(range(r, r + width)) for r in range(400)]
    c = CountingCursor(db)
    insert_rows(c, "INSERT INTO t VALUES", rows, width)
    per = MAX_PARAMETERS // width
    assert c.steps == 400 // per + 400 % per
    assert db.execute("SELECT * FROM t ORDER BY c0").fetchall() == rows


def test_a_tail_applies_to_every_row_of_a_statement():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, n INTEGER)")
    db.execute("INSERT INTO t VALUES (1, 10), (3, 30)")
    insert_rows(db.cursor(), "INSERT INTO t VALUES", [(1, 1), (2, 2), (3, 3), (4, 4)], 2,
                " ON CONFLICT (k) DO UPDATE SET n = n + excluded.n", per_statement=2)
    assert db.execute("SELECT * FROM t ORDER BY k").fetchall() == [(1, 11), (2, 2), (3, 33), (4, 4)]
