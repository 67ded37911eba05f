"""Audit queries across the retention boundary: archived pulls (segments) first, then the audit view.

The same `query` as the audit view (application/audit.py's AuditReadModel), so paging, exports,
the API, the CLI and the dashboard read the archive without knowing it: ids are notification
positions, every archived id is below every id the view still holds, and the cursor stays the id.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import StoredEvent

from application.archive_reading import SegmentArchive
from projections.audit import MAX_LIMIT, AuditRow, audit_row


class ArchivedAudit:
    def __init__(self, view: Any, archive: SegmentArchive, mapper: Any) -> None:
        self._view, self._archive, self._mapper = view, archive, mapper

    def __getattr__(self, name: str) -> Any:   # everything else is the view's (wait, max_tracking_id, ...)
        return getattr(self._view, name)

    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[AuditRow]:
        limit = max(1, min(int(limit), MAX_LIMIT))
        after = after_id or 0
        rows: list[AuditRow] = []
        archived = self._archive.last()
        if after < archived:
            for record in self._archive.records_after(after, since, until):
                row = audit_row(self._mapper.to_domain_event(StoredEvent(
                    originator_id=record.originator_id, originator_version=record.originator_version,
                    topic=record.topic, state=record.state)), record.id)
                if _matches(row, org, repository, result, since, until, client, user_agent, actor, digest):
                    rows.append(row)
                    if len(rows) == limit:
                        return rows
        rows += self._view.query(org=org, repository=repository, result=result, since=since, until=until,
                                 after_id=max(after, archived) or None, limit=limit - len(rows), client=client,
                                 user_agent=user_agent, actor=actor, digest=digest)
        return rows


def _matches(row: AuditRow, org, repository, result, since, until, client, user_agent, actor, digest) -> bool:
    """The view's WHERE clause (projections/audit.py audit_filters), in Python."""
    return ((org is None or row.org == org) and (repository is None or row.repository == repository)
            and (result is None or row.result == result) and (since is None or row.at >= since)
            and (until is None or row.at < until) and (client is None or row.client == client)
            and (actor is None or row.actor == actor) and (digest is None or row.digest == digest)
            and (user_agent is None or user_agent in row.user_agent))
