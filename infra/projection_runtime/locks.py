"""PostgreSQL advisory locks: one runner per projection across every process, and who holds each."""

from __future__ import annotations

import psycopg
from eventsourcing.utils import Environment

from projections.versions import advisory_key

__all__ = ["advisory_key", "connect", "holders", "runner_key", "schema_of", "try_lock", "unlock", "unlock_all"]


def runner_key(schema: str, projection: str) -> int:
    return advisory_key(schema, projection, "runner")


def schema_of(env: dict) -> str:
    return Environment("", env).get("POSTGRES_SCHEMA") or "public"


def connect(env: dict) -> psycopg.Connection:
    """A dedicated autocommit session: session-level advisory locks live exactly as long as it does."""
    e = Environment("", env)
    return psycopg.connect(host=e.get("POSTGRES_HOST"), port=e.get("POSTGRES_PORT") or "5432",
                           user=e.get("POSTGRES_USER"), password=e.get("POSTGRES_PASSWORD") or None,
                           dbname=e.get("POSTGRES_DBNAME"), autocommit=True, connect_timeout=10)


def try_lock(conn: psycopg.Connection, key: int) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])


def unlock(conn: psycopg.Connection, key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def unlock_all(conn: psycopg.Connection) -> None:
    """Every session-level advisory lock of this session, released when this returns (not when it closes)."""
    conn.execute("SELECT pg_advisory_unlock_all()")


def holders(env: dict, names: tuple[str, ...]) -> dict[str, int]:
    """projection -> backend pid of the session running it, for the projections some process runs."""
    keys = {runner_key(schema_of(env), name): name for name in names}
    with connect(env) as conn:
        # A bigint key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
        rows = conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' "
            "AND objsubid = 1 AND granted AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())").fetchall()
    return {keys[key]: pid for key, pid in rows if key in keys}
