"""A statement's many rows as arrays or through a COPY stage (projections/postgres_rows.py): the same rows, in order."""

from __future__ import annotations

import psycopg
import pytest

from projections import postgres_rows
from projections.postgres_rows import row_source

pytestmark = pytest.mark.integration

TYPES = ("text", "bigint", "double precision", "bytea", "integer")
ROWS = [(f"org-{n % 7}", n * 10**12, n / 3 if n % 5 else None, bytes([n % 256, 0, 255]), -n)
        for n in range(1200, 0, -1)]   # not in key order: the source must keep the order given


@pytest.fixture
def conn(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        yield conn


def selected(conn, rows, types=TYPES) -> tuple[list[tuple], str]:
    with conn.cursor() as c:
        with row_source(c, types, rows) as (source, params):
            c.execute(f"SELECT * FROM {source}", params)
            return [tuple(row) for row in c.fetchall()], source


def test_many_rows_go_through_the_stage_and_come_back_as_given_in_order(conn):
    assert len(ROWS) >= postgres_rows.STAGED_ROWS
    rows, source = selected(conn, ROWS)
    assert source.startswith("pg_temp.")
    assert rows == ROWS
    with conn.cursor() as c:   # emptied after use, in the same transaction
        c.execute(f"SELECT count(*) FROM {source}")
        assert c.fetchone()[0] == 0
    again, _ = selected(conn, ROWS[:700])   # a second use in one transaction sees only its own rows
    assert again == ROWS[:700]


def test_few_rows_go_as_arrays_and_come_back_the_same(conn):
    few = ROWS[:postgres_rows.STAGED_ROWS - 1]
    rows, source = selected(conn, few)
    assert source.startswith("unnest(")
    assert rows == few
    assert selected(conn, [])[0] == []


def test_inside_a_pipeline_rows_go_as_arrays_where_copy_is_not_allowed(conn):
    with conn.pipeline():
        rows, source = selected(conn, ROWS)
    assert source.startswith("unnest(")
    assert rows == ROWS


def test_a_failed_statement_leaves_no_staged_rows_behind(conn):
    with pytest.raises(psycopg.errors.UniqueViolation):
        with conn.transaction(), conn.cursor() as c:
            c.execute("CREATE TEMPORARY TABLE keyed (k bigint PRIMARY KEY)")
            with row_source(c, ("bigint",), [(n % 600,) for n in range(1200)]) as (source, params):
                c.execute(f"INSERT INTO keyed SELECT * FROM {source}", params)
    rows, source = selected(conn, ROWS)   # the rolled back COPY left nothing in the stage
    assert rows == ROWS
