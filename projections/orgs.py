"""The orgs view: organization name -> its current settings, and whether it was deleted."""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from domain.org import CacheOrg
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView


@dataclass(frozen=True)
class OrgRow:
    name: str
    settings: dict
    deleted: bool
    generation: int = 1   # see CacheOrg.Recreated


class OrgsView(View):
    name = "orgs"
    handles = (CacheOrg.Registered, CacheOrg.Reconfigured, CacheOrg.Deleted, CacheOrg.Recreated)
    follows = ("Registry",)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        if isinstance(event, CacheOrg.Registered):
            self.put_org(c, event.name, event.settings, 1)
        elif isinstance(event, CacheOrg.Reconfigured):
            # The event carries only the changed keys; like the aggregate, it also undeletes (an old
            # re-creation) and keeps the generation.
            settings, generation = self.org_settings(c, event.name) or ({}, 1)
            self.put_org(c, event.name, {**settings, **event.changes}, generation)
        elif isinstance(event, CacheOrg.Recreated):
            self.put_org(c, event.name, event.settings, event.generation)
        elif isinstance(event, CacheOrg.Deleted):
            self.mark_deleted(c, event.name)

    @abstractmethod
    def put_org(self, c: Any, name: str, settings: dict, generation: int) -> None:
        """Insert or replace the org's settings and generation; the org is not deleted afterwards."""

    @abstractmethod
    def org_settings(self, c: Any, name: str) -> tuple[dict, int] | None:
        """The org's settings and generation."""

    @abstractmethod
    def mark_deleted(self, c: Any, name: str) -> None: ...

    @abstractmethod
    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]: ...

    @abstractmethod
    def get_org(self, name: str) -> OrgRow | None:
        """One org's row, deleted or not: application.ports.OrgsByName, which OrgDirectory reads."""


class SqliteOrgsView(SqliteView, OrgsView):
    tables = ("orgs",)
    schema = (
        "CREATE TABLE IF NOT EXISTS orgs (name TEXT PRIMARY KEY, settings TEXT NOT NULL, "   # settings: JSON
        "deleted INTEGER NOT NULL, generation INTEGER NOT NULL) WITHOUT ROWID",
    )
    schema_version = 2   # 2: generation
    _upsert = ("INSERT INTO orgs VALUES (?, ?, 0, ?) ON CONFLICT (name) DO UPDATE SET "
               "settings = excluded.settings, deleted = 0, generation = excluded.generation")

    def put_org(self, c: SQLiteCursor, name: str, settings: dict, generation: int) -> None:
        c.execute(self._upsert, (name, json.dumps(settings, sort_keys=True), generation))

    def org_settings(self, c: SQLiteCursor, name: str) -> tuple[dict, int] | None:
        c.execute("SELECT settings, generation FROM orgs WHERE name = ?", (name,))
        row = c.fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    def mark_deleted(self, c: SQLiteCursor, name: str) -> None:
        c.execute("UPDATE orgs SET deleted = 1 WHERE name = ?", (name,))

    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]:
        where = "" if include_deleted else "WHERE deleted = 0 "
        return [self._row(row) for row in self._query(f"SELECT * FROM orgs {where}ORDER BY name")]

    def get_org(self, name: str) -> OrgRow | None:
        rows = self._query("SELECT * FROM orgs WHERE name = ?", (name,))
        return self._row(rows[0]) if rows else None

    @staticmethod
    def _row(row: Any) -> OrgRow:
        return OrgRow(row[0], json.loads(row[1]), bool(row[2]), row[3])


class PostgresOrgsView(PostgresView, OrgsView):
    projection = "orgs"
    tables = ("orgs",)
    schema = ("CREATE TABLE IF NOT EXISTS {orgs} (name text PRIMARY KEY, settings jsonb NOT NULL, "
              "deleted boolean NOT NULL, generation integer NOT NULL)",)
    schema_version = 2   # 2: generation

    def put_org(self, c: Cursor, name: str, settings: dict, generation: int) -> None:
        c.execute(self.sql("INSERT INTO {orgs} VALUES (%s, %s, false, %s) ON CONFLICT (name) DO UPDATE SET "
                           "settings = excluded.settings, deleted = false, generation = excluded.generation"),
                  (name, Jsonb(settings), generation))

    def org_settings(self, c: Cursor, name: str) -> tuple[dict, int] | None:
        c.execute(self.sql("SELECT settings, generation FROM {orgs} WHERE name = %s"), (name,))
        row = c.fetchone()
        return (row["settings"], row["generation"]) if row else None

    def mark_deleted(self, c: Cursor, name: str) -> None:
        c.execute(self.sql("UPDATE {orgs} SET deleted = true WHERE name = %s"), (name,))

    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]:
        where = "" if include_deleted else "WHERE NOT deleted "
        return [OrgRow(*row) for row in self._query(f'SELECT * FROM {{orgs}} {where}ORDER BY name COLLATE "C"')]

    def get_org(self, name: str) -> OrgRow | None:
        rows = self._query("SELECT * FROM {orgs} WHERE name = %s", (name,))
        return OrgRow(*rows[0]) if rows else None
