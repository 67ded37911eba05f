"""The dashboard's pages under /ui/: the overview of every org, one org, and the audit search."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Router, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Stream, Template

from application.admin import InvalidRequest, OrgAdmin
from application.analytics import Analytics
from application.audit import AuditFilter, AuditLog
from application.errors import OrgUnknown
from interfaces.http.admin_audit import EXPORT_TYPES, as_item, checked_query, csv_lines, in_thread, jsonl_lines, \
    parse_time
from interfaces.http.admin_errors import admin_error_response
from interfaces.http.charts import Line, human, line_chart, sparkline
from interfaces.http.ui_session import LoginRequired, login, login_form, logout, to_login, ui_guard

# The range choices: (seconds, bucket of the charts).
RANGES = {"24h": (86400, "hour"), "7d": (7 * 86400, "hour"), "30d": (30 * 86400, "day")}
AUDIT_FIELDS = ("org", "repository", "result", "client", "user_agent", "since", "until")


def chosen_range(value: str | None) -> str:
    return value if value in RANGES else "24h"


def org_state(admin: OrgAdmin, name: str) -> dict[str, Any]:
    """Stored bytes and the upstream rate-limit reading of an org (none for an org deleted since)."""
    try:
        details = admin.show(name)
    except OrgUnknown:
        return {"bytes_stored": None, "rate_limit": None, "settings": None}
    return {"bytes_stored": details.bytes_stored, "rate_limit": details.upstream_rate_limit,
            "settings": msgspec.structs.asdict(details.organization)}


@get("/", sync_to_thread=True, guards=[ui_guard])
def overview(analytics: NamedDependency[Analytics], admin: NamedDependency[OrgAdmin],
             range: FromQuery[str | None] = None) -> Template:
    span_name = chosen_range(range)
    span, bucket = RANGES[span_name]
    now = analytics.now()
    summary = analytics.summary(None, now - span, now)
    rows = []
    for org in summary["orgs"]:
        _, _, buckets = analytics.over_time(org["org"], bucket, now - span, now)
        pulls = [numbers["pulls_total"] for _, numbers in buckets]
        rows.append({**org, **org_state(admin, org["org"]),
                     "spark": sparkline(pulls, f"{org['org']}: pulls per {bucket}, {sum(pulls)} in all")})
    return Template("overview.html", context={"orgs": rows, "range": span_name, "ranges": list(RANGES),
                                              "since": summary["since"], "until": summary["until"], "human": human})


@get("/orgs/{name:str}", sync_to_thread=True, guards=[ui_guard])
def org_page(name: FromPath[str], analytics: NamedDependency[Analytics], admin: NamedDependency[OrgAdmin],
             audit_log: NamedDependency[AuditLog], range: FromQuery[str | None] = None) -> Template:
    span_name = chosen_range(range)
    span, bucket = RANGES[span_name]
    now = analytics.now()
    summary = analytics.summary(name, now - span, now)
    _, _, buckets = analytics.over_time(name, bucket, now - span, now)
    times = [start for start, _ in buckets]
    figures = [numbers for _, numbers in buckets]
    charts = [
        line_chart(f"Pulls per {bucket}", times, [Line(result, [f["pulls"].get(result, 0) for f in figures])
                                                  for result in ("hit", "miss", "stale", "error")], "pulls"),
        line_chart(f"Hit ratio per {bucket}", times,
                   [Line("hit ratio", [None if f["hit_ratio"] is None else f["hit_ratio"] * 100 for f in figures])],
                   "%", maximum=100),
        line_chart(f"Traffic per {bucket}", times, [Line("served", [f["bytes_served"] for f in figures]),
                                                    Line("from upstream", [f["bytes_from_upstream"] for f in figures])],
                   "bytes"),
    ]
    top = analytics.top(name, "pulls", now - span, now, 10)
    recent = audit_log.page(AuditFilter(org=name), None, 20).rows
    return Template("org.html", context={"org": name, "summary": summary, "charts": charts, "top": top,
                                         "recent": [as_item(row) for row in recent], "range": span_name,
                                         "ranges": list(RANGES), "state": org_state(admin, name), "human": human})


def audit_filter(params: dict[str, str | None], now: float) -> AuditFilter:
    q = checked_query(params, None, None)
    return AuditFilter(q["org"], q["repository"], q["result"], q["client"], q["user_agent"],
                       parse_time(q["since"], "since", now), parse_time(q["until"], "until", now)).checked()


@get("/audit", sync_to_thread=True, guards=[ui_guard])
def audit_page(request: Request, audit_log: NamedDependency[AuditLog],
               analytics: NamedDependency[Analytics]) -> Template:
    params = {field: request.query_params.get(field) or None for field in AUDIT_FIELDS}
    cursor = request.query_params.get("cursor") or None
    error, rows, next_cursor = None, [], None
    try:
        checked_query({}, cursor, None)
        page = audit_log.page(audit_filter(params, analytics.now()), cursor, 50)
        rows, next_cursor = [as_item(row) for row in page.rows], page.next_cursor
    except InvalidRequest as invalid:
        error = "; ".join(f"{field}: {problem}" for field, problem in invalid.fields.items()) or str(invalid)
    kept = {field: value for field, value in params.items() if value}
    return Template("audit.html", context={
        "params": params, "rows": rows, "error": error, "orgs": analytics.orgs(),
        "next": f"/ui/audit?{urlencode({**kept, 'cursor': next_cursor})}" if next_cursor else None,
        "exports": {kind: f"/ui/audit/export?{urlencode({**kept, 'format': kind})}" for kind in EXPORT_TYPES}})


@get("/audit/export", guards=[ui_guard])
async def audit_export(request: Request, audit_log: NamedDependency[AuditLog],
                       analytics: NamedDependency[Analytics]) -> Stream:
    kind = request.query_params.get("format")
    if kind not in EXPORT_TYPES:
        raise InvalidRequest("format must be csv or jsonl", {"format": "csv or jsonl"})
    params = {field: request.query_params.get(field) or None for field in AUDIT_FIELDS}
    pages = audit_log.export(audit_filter(params, analytics.now()), None, None)
    chunks = csv_lines(pages) if kind == "csv" else jsonl_lines(pages)
    return Stream(in_thread(chunks), media_type=EXPORT_TYPES[kind],
                  headers={"Content-Disposition": f'attachment; filename="entrepot-audit.{kind}"'})


def ui_router() -> Router:
    """/ui: the dashboard, behind a login with the admin token (not part of the admin API's schema)."""
    return Router("/ui", route_handlers=[login_form, login, logout, overview, org_page, audit_page, audit_export],
                  include_in_schema=False,
                  exception_handlers={LoginRequired: to_login, InvalidRequest: admin_error_response,
                                      OrgUnknown: admin_error_response})
