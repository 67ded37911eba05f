"""Admin API: /api/v1/audit — the pull audit log, filtered, paged by cursor, or exported as JSON Lines / CSV."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromQuery as Query
from litestar.params import QueryParameter
from litestar.response import Stream

from application.admin import InvalidRequest
from application.audit import AuditFilter, AuditLog
from domain.access import Principal, Role
from projections.audit import AuditRow

COLUMNS = [f.name for f in fields(AuditRow)]
EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_AGO = re.compile(r"^(\d{1,9})([smhdw])$")
MAX_PARAM = 512                 # org names, repositories, addresses, user agents: all far shorter
MAX_CURSOR = 2**63 - 1          # ids are BIGINT / SQLite INTEGER
MAX_LIMIT = 10**9
MAX_EPOCH = 10**11              # the year 5138: later is a typo, and larger overflows the databases
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AuditPageBody(msgspec.Struct):
    items: list[dict[str, Any]]
    next_cursor: str | None


def parse_time(value: str | None, field: str, now: float) -> float | None:
    """Epoch seconds, ISO 8601 (UTC unless it says otherwise), or a duration ago: 90s, 15m, 2h, 7d, 1w."""
    if value is None or value == "":
        return None
    text = value.strip()
    if match := _AGO.match(text):
        return now - int(match[1]) * _UNIT[match[2]]
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not -MAX_EPOCH <= seconds <= MAX_EPOCH:   # also refuses nan and inf
            raise InvalidRequest(f"{field}: out of range", {field: f"epoch seconds must be within ±{MAX_EPOCH}"})
        return seconds
    try:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{field}: not a time", {field: "expected ISO 8601 (2026-01-31T12:00:00Z), "
                                                             "epoch seconds, or a duration ago such as 2h"}) from None


def checked_text(field: str, value: str | None) -> str | None:
    """Query text is bounded and printable: a NUL reaches no database (PostgreSQL refuses it with a 500)."""
    if value is None:
        return None
    if len(value) > MAX_PARAM:
        raise InvalidRequest(f"{field}: too long", {field: f"at most {MAX_PARAM} characters"})
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise InvalidRequest(f"{field}: control characters", {field: "must not contain control characters"})
    return value


def checked_query(params: dict[str, str | None], cursor: str | None, limit: int | None) -> dict[str, str | None]:
    checked = {field: checked_text(field, value) for field, value in params.items()}
    checked_text("cursor", cursor)
    if cursor and (not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19 or int(cursor) > MAX_CURSOR):
        raise InvalidRequest("invalid cursor", {"cursor": "not a cursor this server handed out"})
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest("limit out of range", {"limit": f"must be between 1 and {MAX_LIMIT}, got {limit}"[:200]})
    return checked


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_item(row: Any) -> dict[str, Any]:
    item = asdict(row)
    item["at"] = iso(row.at)
    return item


def csv_lines(pages: Iterator[list[Any]], header: bool = True) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for page in pages:
        for row in page:
            writer.writerow(as_item(row))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def jsonl_lines(pages: Iterator[list[Any]]) -> Iterator[str]:
    for page in pages:
        yield "".join(msgspec.json.encode(as_item(row)).decode() + "\n" for row in page)


async def in_thread(chunks: Iterator[str]) -> AsyncIterator[bytes]:
    """Each chunk is one page query: run it off the event loop."""
    done = object()
    while (chunk := await anyio.to_thread.run_sync(next, chunks, done)) is not done:
        yield chunk.encode()


def audited_org(principal: Principal, org: str | None) -> str | None:
    """An org admin reads its own org's audit only (the filter defaults to it); the global admin, any."""
    if principal.role is Role.ADMIN:
        return org
    if org not in (None, "", principal.org):
        raise PermissionDeniedException(f"{principal.actor} administers organization {principal.org} only")
    return principal.org


@get("/audit", tags=["audit"])
async def audit(
    audit_log: NamedDependency[AuditLog],
    principal: NamedDependency[Principal],
    org: Annotated[str | None, QueryParameter(
        description="exactly; an org admin's audit is its own org's, whatever it asks")] = None,
    repository: Query[str | None] = None,
    result: Annotated[str | None, QueryParameter(description="hit, miss, stale, revalidated, error or denied")] = None,
    client: Annotated[str | None, QueryParameter(description="the client's address, exactly")] = None,
    actor: Annotated[str | None, QueryParameter(description="who pulled, exactly: anonymous, <org>+<robot>, admin")] = None,
    digest: Annotated[str | None, QueryParameter(description="the manifest digest served, by tag or by digest")] = None,
    user_agent: Annotated[str | None, QueryParameter(description="a substring of the client's User-Agent")] = None,
    since: Annotated[str | None, QueryParameter(
        description="inclusive: ISO 8601, epoch seconds, or a duration ago (90s, 15m, 2h, 7d, 1w)")] = None,
    until: Annotated[str | None, QueryParameter(description="exclusive; the same forms as since")] = None,
    cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
    limit: Annotated[int | None, QueryParameter(
        description="rows per page (1-1000, default 100); for an export, the most rows in all")] = None,
    # named `format` for clients (and in validation errors), so it shadows the builtin here
    format: Annotated[Literal["json", "jsonl", "csv"], QueryParameter(
        description="json: one page; jsonl or csv: a streamed export of every match")] = "json",
) -> Response:
    now = time.time()
    org = audited_org(principal, org)
    q = checked_query({"org": org, "repository": repository, "result": result, "client": client,
                       "user_agent": user_agent, "since": since, "until": until, "actor": actor, "digest": digest},
                      cursor, limit)
    filters = AuditFilter(q["org"], q["repository"], q["result"], q["client"], q["user_agent"],
                          parse_time(q["since"], "since", now), parse_time(q["until"], "until", now), q["actor"],
                          q["digest"])
    if format == "json":
        page = await anyio.to_thread.run_sync(
            lambda: audit_log.page(filters, cursor, 100 if limit is None else limit))
        return Response(AuditPageBody([as_item(row) for row in page.rows], page.next_cursor))
    pages = audit_log.export(filters, cursor, limit)   # validates now, before the response starts
    chunks = csv_lines(pages) if format == "csv" else jsonl_lines(pages)
    return Stream(in_thread(chunks), media_type=EXPORT_TYPES[format],
                  headers={"Content-Disposition": f'attachment; filename="entrepot-audit.{format}"'})
