"""Choosing the event store from `[database]`: the eventsourcing keys a PostgreSQL URL turns into, and bad URLs."""

from __future__ import annotations

import pytest

from infra.persistence import postgres_env
from infra.settings import SettingsError, load_settings


def test_a_postgresql_url_becomes_the_eventsourcing_keys_of_every_app_and_view():
    env = postgres_env("postgresql://entrepot:s%40cret@db.internal:6543/cache", "registry")
    assert {k: env[k] for k in ("PERSISTENCE_MODULE", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME",
                                "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_SCHEMA")} == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "6543",
        "POSTGRES_DBNAME": "cache", "POSTGRES_USER": "entrepot", "POSTGRES_PASSWORD": "s@cret",
        "POSTGRES_SCHEMA": "registry"}
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "no"
    assert (env["POSTGRES_POOL_SIZE"], env["VIEWS_POSTGRES_POOL_SIZE"]) == ("1", "1")   # replicas share max_connections


def test_the_password_may_come_from_pgpassword_instead_of_the_url(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    env = postgres_env("postgresql://postgres@127.0.0.1/entrepot", "entrepot")
    assert (env["POSTGRES_PASSWORD"], env["POSTGRES_PORT"]) == ("from-env", "5432")


@pytest.mark.parametrize("url", ["mysql://root@db/entrepot", "postgresql://db/x?sslmode=require",
                                 "postgresql://db:notaport/x"])
def test_unusable_urls_are_refused_with_a_settings_error(url):
    with pytest.raises(SettingsError, match=r"\[database\] url"):
        postgres_env(url, "entrepot")


def test_database_keys_are_read_and_checked(tmp_path):
    config = tmp_path / "entrepot.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:5432/entrepot"\nrun_projections = false\n')
    database = load_settings(str(config)).database
    assert (database.url, database.schema, database.run_projections) == (
        "postgresql://postgres@127.0.0.1:5432/entrepot", "entrepot", False)
    config.write_text('[database]\nrun_projections = "no"\n')
    with pytest.raises(SettingsError, match="run_projections"):
        load_settings(str(config))
