"""Audit log queries: who pulled what, filtered, paged with a cursor, or exported page by page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from application.admin import InvalidRequest
from domain.names import Digest, InvalidReference
from domain.pull import PullResult

MAX_PAGE = 1000
EXPORT_PAGE = 1000


class AuditReadModel(Protocol):
    """The audit view (projections `audit`)."""

    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[Any]:
        """Rows (dataclasses with an `id`) in id order."""


@dataclass(frozen=True)
class AuditFilter:
    """Every field is optional; set fields must all match. `user_agent` matches a substring."""

    org: str | None = None
    repository: str | None = None
    result: str | None = None
    client: str | None = None        # the client's address
    user_agent: str | None = None
    since: float | None = None       # seconds since the epoch, inclusive
    until: float | None = None       # exclusive
    actor: str | None = None         # who pulled: anonymous, <org>+<robot>, admin
    digest: str | None = None        # the manifest digest served, whether pulled by tag or by digest

    def checked(self) -> AuditFilter:
        results = [r.value for r in PullResult]
        if self.result is not None and self.result not in results:
            raise InvalidRequest(f"result must be one of {', '.join(results)}",
                                 {"result": f"must be one of {', '.join(results)}, got {self.result!r}"})
        if self.digest is not None:
            try:
                Digest.parse(self.digest)
            except InvalidReference as error:
                raise InvalidRequest(str(error)[:300], {"digest": "expected <algorithm>:<hex>, e.g. sha256:…"}) from None
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidRequest("since must not be after until", {"since": "is after until"})
        return self

    def query_args(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AuditPage:
    rows: list[Any]
    next_cursor: str | None       # pass it back as `cursor` for the next page; None: this was the last


def parse_cursor(cursor: str | None) -> int | None:
    """A cursor is the id of the last row seen; opaque to clients."""
    if cursor in (None, ""):
        return None
    if not cursor.isdigit():
        raise InvalidRequest("invalid cursor", {"cursor": "not a cursor this server handed out"})
    return int(cursor)


class AuditLog:
    def __init__(self, view: AuditReadModel) -> None:
        self._view = view

    def page(self, filters: AuditFilter, cursor: str | None = None, limit: int = 100) -> AuditPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}",
                                 {"limit": f"must be between 1 and {MAX_PAGE}, got {limit}"})
        # One row more than asked tells whether another page follows, without a second query.
        rows = self._view.query(**filters.checked().query_args(), after_id=parse_cursor(cursor), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(rows, str(rows[-1].id) if more else None)

    def export(self, filters: AuditFilter, cursor: str | None = None, limit: int | None = None) -> Iterator[list[Any]]:
        """Every matching row after `cursor` (at most `limit`), in pages; each page is one query."""
        if limit is not None and limit < 1:
            raise InvalidRequest("limit must be at least 1", {"limit": f"must be at least 1, got {limit}"})
        args = filters.checked().query_args()
        after = parse_cursor(cursor)
        return self._pages(args, after, limit)

    def _pages(self, args: dict, after: int | None, limit: int | None) -> Iterator[list[Any]]:
        left = limit
        while left is None or left > 0:
            size = EXPORT_PAGE if left is None else min(EXPORT_PAGE, left)
            rows = self._view.query(**args, after_id=after, limit=size)
            if not rows:
                return
            yield rows
            after = rows[-1].id
            if left is not None:
                left -= len(rows)
            if len(rows) < size:
                return
