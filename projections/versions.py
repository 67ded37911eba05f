"""Which copy of each PostgreSQL view is live: the `view_versions` table, table names per version, the switch.

Each view's tables exist once per version (`tags_v1`, `tags_v1_tracking`, ...). Readers query
stable names (`tags`, `tags_tracking`), which are SQL views over the live version's tables, so a
blue/green rebuild switches every reader in one transaction and prepared statements re-plan on
their own. Writers (runners, rebuilds) name a version explicitly.

`view_schemas` records the schema version each copy's tables were made with, so that a copy made
by older code (fewer columns) is known and rebuilt into a new copy rather than written to.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.sql import SQL, Identifier


VERSIONS_TABLE = "view_versions"
SCHEMAS_TABLE = "view_schemas"
SWITCH_CHANNEL = "entrepot_view_versions"   # NOTIFY on a switch, so runners follow at once


def advisory_key(*parts: str) -> int:
    """A stable, non-negative bigint for pg_advisory_lock, from names (schema first: one key per schema)."""
    digest = hashlib.blake2b("\x1f".join(("entrepot", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def ddl_lock(curs: Cursor, schema: str) -> None:
    """Serialise DDL on the views of a schema for this transaction: concurrent CREATE ... IF NOT EXISTS can fail."""
    curs.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema, "ddl"),))


def tracking_table(projection: str, version: int | None) -> str:
    """The tracking table of one version, or the stable name readers use when `version` is None."""
    return f"{projection}_tracking" if version is None else f"{projection}_v{version}_tracking"


def table(name: str, version: int | None) -> str:
    return name if version is None else f"{name}_v{version}"


def _versions(schema: str) -> Identifier:
    return Identifier(schema, VERSIONS_TABLE)


def live_version(datastore: PostgresDatastore, projection: str) -> int:
    """The live version of a projection's view; version 1 when the projection is new."""
    with datastore.transaction(commit=True) as c:
        c.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f'"{datastore.schema}"."{VERSIONS_TABLE}"',))
        if _first(c.fetchone()):
            c.execute(SQL("SELECT version FROM {} WHERE projection = %s").format(_versions(datastore.schema)),
                      (projection,))
            row = c.fetchone()
            if row:
                return _first(row)
        ddl_lock(c, datastore.schema)
        return live_version_in(c, datastore.schema, projection)


def live_version_in(curs: Cursor, schema: str, projection: str) -> int:
    """live_version() inside the caller's transaction, which holds the DDL lock."""
    curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (projection text PRIMARY KEY, version integer NOT NULL)")
                 .format(_versions(schema)))
    curs.execute(SQL("INSERT INTO {} VALUES (%s, 1) ON CONFLICT (projection) DO NOTHING").format(_versions(schema)),
                 (projection,))
    curs.execute(SQL("SELECT version FROM {} WHERE projection = %s").format(_versions(schema)), (projection,))
    return _first(curs.fetchone())


def live_versions(curs: Cursor, schema: str) -> dict[str, int]:
    """Every projection's live version (empty before the first view was opened)."""
    curs.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f'"{schema}"."{VERSIONS_TABLE}"',))
    if not _first(curs.fetchone()):
        return {}
    curs.execute(SQL("SELECT projection, version FROM {}").format(_versions(schema)))
    return {row[0]: row[1] for row in map(_values, curs.fetchall())}


def existing_versions(curs: Cursor, schema: str, projection: str) -> set[int]:
    """The versions whose tracking table exists, live or not (a rebuild in progress, or an old copy)."""
    curs.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                 (schema, f"{projection}\\_v%\\_tracking"))
    pattern = re.compile(rf"^{re.escape(projection)}_v(\d+)_tracking$")
    found = (pattern.match(_first(row)) for row in curs.fetchall())
    return {int(m.group(1)) for m in found if m}


def point_readers(curs: Cursor, schema: str, projection: str, tables: Iterable[str], version: int) -> None:
    """(Re)create the stable SQL views over `version`'s tables, inside the caller's transaction."""
    for name in (*tables, None):
        stable = tracking_table(projection, None) if name is None else table(name, None)
        physical = tracking_table(projection, version) if name is None else table(name, version)
        # DROP + CREATE rather than CREATE OR REPLACE: a new version may change the columns.
        curs.execute(SQL("DROP VIEW IF EXISTS {}").format(Identifier(schema, stable)))
        curs.execute(SQL("CREATE VIEW {} AS SELECT * FROM {}").format(Identifier(schema, stable),
                                                                       Identifier(schema, physical)))


def switch(curs: Cursor, schema: str, projection: str, tables: Iterable[str], version: int) -> None:
    """Make `version` live for readers and runners, atomically with the caller's transaction."""
    ddl_lock(curs, schema)
    point_readers(curs, schema, projection, tables, version)
    curs.execute(SQL("UPDATE {} SET version = %s WHERE projection = %s").format(_versions(schema)),
                 (version, projection))
    curs.execute(SQL("NOTIFY {}").format(Identifier(SWITCH_CHANNEL)))


def drop_version(curs: Cursor, schema: str, projection: str, tables: Iterable[str], version: int) -> None:
    for name in (*tables, None):
        physical = tracking_table(projection, version) if name is None else table(name, version)
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(schema, physical)))
    if _exists(curs, schema, SCHEMAS_TABLE):
        curs.execute(SQL("DELETE FROM {} WHERE projection = %s AND version = %s")
                     .format(Identifier(schema, SCHEMAS_TABLE)), (projection, version))


def drop_retired(curs: Cursor, schema: str, retired: Iterable[str]) -> None:
    """Tables an older schema of a view had and the current one has not: the readers' name over them
    and every version's copy (a switch to the new schema leaves both behind otherwise). Under the DDL lock."""
    for name in retired:
        curs.execute(SQL("DROP VIEW IF EXISTS {}").format(Identifier(schema, name)))
        curs.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                     (schema, f"{name}\\_v%"))
        pattern = re.compile(rf"^{re.escape(name)}_v\d+$")
        for found in (_first(row) for row in curs.fetchall()):
            if pattern.match(found):
                curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(schema, found)))


def record_schema(curs: Cursor, schema: str, projection: str, version: int, schema_version: int) -> None:
    """Inside the transaction (holding the DDL lock) that creates the tables of copy `version`."""
    schemas = Identifier(schema, SCHEMAS_TABLE)
    curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (projection text NOT NULL, version integer NOT NULL, "
                     "schema_version integer NOT NULL, PRIMARY KEY (projection, version))").format(schemas))
    curs.execute(SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (projection, version) "
                     "DO UPDATE SET schema_version = EXCLUDED.schema_version").format(schemas),
                 (projection, version, schema_version))


def schema_of(curs: Cursor, schema: str, projection: str, version: int) -> int:
    """The schema version copy `version` was made with; 1 for copies made before these were recorded."""
    if not _exists(curs, schema, SCHEMAS_TABLE):
        return 1
    curs.execute(SQL("SELECT schema_version FROM {} WHERE projection = %s AND version = %s")
                 .format(Identifier(schema, SCHEMAS_TABLE)), (projection, version))
    row = curs.fetchone()
    return _first(row) if row else 1


def _exists(curs: Cursor, schema: str, name: str) -> bool:
    curs.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f'"{schema}"."{name}"',))
    return bool(_first(curs.fetchone()))


def _values(row) -> tuple:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _first(row):
    return _values(row)[0]
