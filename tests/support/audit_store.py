"""A config file naming a test's event store (SQLite data dir or PostgreSQL schema), for offline CLI commands."""

from __future__ import annotations

from pathlib import Path


def config_for(env: dict, tmp_path: Path, extra: str = "") -> Path:
    """entrepot.toml for `env` (from tests/support/postgres.py env_factory("main")), plus `extra` TOML."""
    config = tmp_path / "entrepot.toml"
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        text = f'[server]\ndata_dir = "{tmp_path / "main"}"\n'
    else:
        text = (f'[server]\ndata_dir = "{tmp_path / "d"}"\nsecret_key = "{"k" * 44}"\n[database]\n'
                f'url = "postgresql://{env["POSTGRES_USER"]}@{env["POSTGRES_HOST"]}:{env["POSTGRES_PORT"]}/'
                f'{env["POSTGRES_DBNAME"]}"\nschema = "{env["POSTGRES_SCHEMA"]}"\n')
    if "ANALYTICS_MINUTE_DAYS" in env:   # as the env's runners keep them (env_factory: forever)
        text += f'[analytics]\nminute_days = {env["ANALYTICS_MINUTE_DAYS"]}\n'
    config.write_text(text + extra)
    return config
