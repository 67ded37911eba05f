"""PostgreSQL for tests: a fresh database per test module, a fresh schema per test, and the backend parameter."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from infra.persistence import embedded_env, postgres_env, prepare_database
from tests.support.components import REQUIRE_ENV

ADMIN_URL = os.environ.get("ENTREPOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgres")


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable; fail instead when $ENTREPOT_REQUIRE_COMPONENTS=1 (CI)."""
    try:
        _admin().close()
    except psycopg.OperationalError as error:
        message = f"PostgreSQL unreachable at {ADMIN_URL} ($ENTREPOT_TEST_POSTGRES): {error}".strip()
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a database created for this test module (entrepot_test_<random>), dropped after it."""
    require_postgres()
    name = f"entrepot_test_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    with _admin() as conn:
        # FORCE: a test that failed may have left a pool or a runner connected.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_env_factory(postgres_url) -> Callable[[str], dict[str, str]]:
    """Call it with a tag: the env of a fresh schema (t_<random>_<tag>) in this module's database."""
    token = secrets.token_hex(3)

    def make(tag: str = "main") -> dict[str, str]:
        env = postgres_env(postgres_url, f"t_{token}_{tag}")
        prepare_database(env)
        return env

    return make


KEEP_MINUTES = {"ANALYTICS_MINUTE_DAYS": "0"}


@pytest.fixture(params=BACKENDS)
def event_store_backend(request) -> str:
    return request.param


@pytest.fixture
def env_factory(request, event_store_backend, tmp_path) -> Callable[[str], dict[str, str]]:
    """Call it with a tag: a fresh, separate event store and read model on the test's backend.

    Its analytics view keeps minute buckets forever (KEEP_MINUTES): these tests' pulls are dated in 1970 or
    2025, and a view comparing its rows with a rebuild's must not depend on the hour of the clock
    (tests/integration/test_minute_floor.py tests the window)."""
    if event_store_backend == "sqlite":
        return lambda tag="main": {**embedded_env(tmp_path / tag), **KEEP_MINUTES}
    # Looked up only now, so the SQLite variants neither need nor skip for PostgreSQL.
    make = request.getfixturevalue("postgres_env_factory")
    return lambda tag="main": {**make(tag), **KEEP_MINUTES}
