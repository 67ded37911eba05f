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
from projections.base import SqliteView, View, ViewProjection
from projections.postgres_view import PostgresView


@dataclass(frozen=True)
class OrgRow:
    name: str
    settings: dict
    deleted: bool


class OrgsView(View):
    @abstractmethod
    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]: ...

    @abstractmethod
    def get_org(self, name: str) -> OrgRow | None:
        """One org's row, deleted or not: application.ports.OrgsByName, which OrgDirectory reads."""


class OrgsProjection(ViewProjection):
    name = "orgs"
    handles = (CacheOrg.Registered, CacheOrg.Reconfigured, CacheOrg.Deleted)


class SqliteOrgsView(SqliteView, OrgsView):
    tables = ("orgs",)
    schema = (
        "CREATE TABLE IF NOT EXISTS orgs (name TEXT PRIMARY KEY, settings TEXT NOT NULL, "   # settings: JSON
        "deleted INTEGER NOT NULL) WITHOUT ROWID",
    )
    _upsert = ("INSERT INTO orgs VALUES (?, ?, 0) ON CONFLICT (name) DO UPDATE SET "
               "settings = excluded.settings, deleted = 0")

    def _apply(self, c: SQLiteCursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, CacheOrg.Registered):
            c.execute(self._upsert, (event.name, json.dumps(event.settings, sort_keys=True)))
        elif isinstance(event, CacheOrg.Reconfigured):
            # The event carries only the changed keys; like the aggregate, it also undeletes.
            c.execute("SELECT settings FROM orgs WHERE name = ?", (event.name,))
            row = c.fetchone()
            settings = {**(json.loads(row[0]) if row else {}), **event.changes}
            c.execute(self._upsert, (event.name, json.dumps(settings, sort_keys=True)))
        elif isinstance(event, CacheOrg.Deleted):
            c.execute("UPDATE orgs SET deleted = 1 WHERE name = ?", (event.name,))

    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]:
        where = "" if include_deleted else "WHERE deleted = 0 "
        return [self._row(row) for row in self._query(f"SELECT * FROM orgs {where}ORDER BY name")]

    def get_org(self, name: str) -> OrgRow | None:
        rows = self._query("SELECT * FROM orgs WHERE name = ?", (name,))
        return self._row(rows[0]) if rows else None

    @staticmethod
    def _row(row: Any) -> OrgRow:
        return OrgRow(row[0], json.loads(row[1]), bool(row[2]))


class PostgresOrgsView(PostgresView, OrgsView):
    projection = "orgs"
    tables = ("orgs",)
    schema = ("CREATE TABLE IF NOT EXISTS {orgs} (name text PRIMARY KEY, settings jsonb NOT NULL, "
              "deleted boolean NOT NULL)",)

    def _apply(self, c: Cursor, event: Any, tracking: Tracking) -> None:
        upsert = self.sql("INSERT INTO {orgs} VALUES (%s, %s, false) ON CONFLICT (name) DO UPDATE SET "
                          "settings = excluded.settings, deleted = false")
        if isinstance(event, CacheOrg.Registered):
            c.execute(upsert, (event.name, Jsonb(event.settings)))
        elif isinstance(event, CacheOrg.Reconfigured):
            # The event carries only the changed keys; like the aggregate, it also undeletes.
            c.execute(self.sql("SELECT settings FROM {orgs} WHERE name = %s"), (event.name,))
            row = c.fetchone()
            c.execute(upsert, (event.name, Jsonb({**(row["settings"] if row else {}), **event.changes})))
        elif isinstance(event, CacheOrg.Deleted):
            c.execute(self.sql("UPDATE {orgs} SET deleted = true WHERE name = %s"), (event.name,))

    def list_orgs(self, include_deleted: bool = False) -> list[OrgRow]:
        where = "" if include_deleted else "WHERE NOT deleted "
        return [OrgRow(*row) for row in self._query(f'SELECT * FROM {{orgs}} {where}ORDER BY name COLLATE "C"')]

    def get_org(self, name: str) -> OrgRow | None:
        rows = self._query("SELECT * FROM {orgs} WHERE name = %s", (name,))
        return OrgRow(*rows[0]) if rows else None
