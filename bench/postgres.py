"""A fresh PostgreSQL database for the Entrepôt-on-PostgreSQL target, dropped afterwards."""

from __future__ import annotations

import os
import socket
import time

import psycopg
from psycopg import sql


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class FreshDatabase:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url            # e.g. postgresql://postgres@127.0.0.1:5432/postgres
        self.name = f"entrepot_bench_{os.getpid()}_{int(time.time())}"

    @property
    def url(self) -> str:
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{self.name}"

    def create(self) -> FreshDatabase:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self

    def tables(self, schema: str = "entrepot") -> list[str]:
        """Tables the server created: none means it ignored `[database] url`."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                (schema,)).fetchall()
        return sorted(row[0] for row in rows)

    def drop(self) -> None:
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        except psycopg.Error:
            pass


ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def add_backend_arguments(parser) -> None:
    """--backend (both, sqlite, postgres) and --postgres-url, which chosen_backends reads."""
    parser.add_argument("--backend", choices=("both", "sqlite", "postgres"), default="both")
    parser.add_argument("--postgres-url", default=ADMIN_URL)


def chosen_backends(args, say=print) -> list[str]:
    """The backends `--backend` asks for (both, sqlite, postgres), without a local PostgreSQL that is not up."""
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and "127.0.0.1:5432" in args.postgres_url and not reachable("127.0.0.1", 5432):
        say("PostgreSQL is not reachable on 127.0.0.1:5432: skipping it")
        backends.remove("postgres")
    return backends


def fresh_database_url(admin_url: str, stack) -> str:
    """A new database's URL, dropped when `stack` (an ExitStack) closes."""
    database = FreshDatabase(admin_url).create()
    stack.callback(database.drop)
    return database.url


def fresh_env(backend: str, admin_url: str, stack, sqlite_dir) -> dict:
    """An empty event store and read model: SQLite files under `sqlite_dir`, or a new PostgreSQL database."""
    from infra.persistence import embedded_env, postgres_env, prepare_database

    if backend == "sqlite":
        return embedded_env(sqlite_dir)
    env = postgres_env(fresh_database_url(admin_url, stack), "bench")
    prepare_database(env)
    return env
