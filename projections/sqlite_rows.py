"""Many rows into a SQLite table with few statements: multi-row VALUES instead of executemany.

Python's sqlite3 `executemany` steps the statement once per row and releases and retakes the GIL around
every step. A rebuild writes each view in a thread of its own next to a thread reading and decoding the
next page (infra/projection_runtime/bulk.py), so each row's step hands the GIL to a thread running Python
and then waits to get it back: the chain's and the audit view's million-row inserts spent most of their
time waiting for the GIL (py-spy of a 1M-pull rebuild: executemany 12.5 s wall in the chain's writer,
against 1.5 s of CPU for the same rows inserted alone; bench/results/2026-11-30-rebuild-s8.md).
A statement of many rows binds them all with the GIL held (C code, quick) and steps once.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

# SQLite binds at most 32,766 parameters per statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
MAX_PARAMETERS = 32_766
# Rows per statement: a few hundred already make the per-statement cost (parse once, then one step)
# negligible per row; one statement text per table and width, so the connection's statement cache keeps it.
ROWS_PER_STATEMENT = 500


def insert_rows(c, head: str, rows: Sequence[tuple], width: int, tail: str = "",
                per_statement: int = ROWS_PER_STATEMENT) -> None:
    """`{head} (?, ...), (?, ...) {tail}` for the rows, `per_statement` at a time (fewer for wide rows);
    the rows left over (fewer than one statement's) go through executemany. `head` ends with VALUES."""
    per = max(1, min(per_statement, MAX_PARAMETERS // width))
    one = "(" + ", ".join("?" * width) + ")"
    whole = len(rows) - len(rows) % per
    if whole:
        statement = f"{head} {', '.join([one] * per)}{tail}"
        flatten = chain.from_iterable
        for start in range(0, whole, per):
            c.execute(statement, list(flatten(rows[start:start + per])))
    if whole < len(rows):
        c.executemany(f"{head} {one}{tail}", rows[whole:])
