"""Admin API: /api/v1/history — what a tag resolved to at an instant, and every pull of a digest."""

from __future__ import annotations

import time
from typing import Annotated

import anyio.to_thread
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from application.admin import InvalidRequest
from application.history import History, TagNotCachedThen
from domain.access import Principal
from interfaces.http.admin_audit import as_item, audited_org, checked_query, iso, parse_time
from interfaces.http.admin_errors import admin_body

TIME_FORMS = "ISO 8601, epoch seconds, or a duration ago (90s, 15m, 2h, 7d, 1w)"


def _required(field: str, value: str | None) -> str:
    if not value:
        raise InvalidRequest(f"{field} is required", {field: "required"})
    return value


def _shown(change: dict | None) -> dict | None:
    """Times as ISO 8601 and epoch seconds both: people read the one, scripts compare the other."""
    if change is None:
        return None
    out = dict(change)
    for key in ("since", "until", "at"):
        if key in out:
            out[f"{key}_epoch"] = out[key]
            out[key] = None if out[key] is None else iso(out[key])
    return out


@get("/history/tag", tags=["history"])
async def history_tag(
    history: NamedDependency[History],
    principal: NamedDependency[Principal],
    org: Annotated[str | None, QueryParameter(
        description="the cache organization (deleted ones too); an org admin's own by default, no other")] = None,
    repository: Annotated[str | None, QueryParameter(description="the upstream repository path")] = None,
    tag: Annotated[str | None, QueryParameter(description="the tag")] = None,
    at: Annotated[str | None, QueryParameter(description=f"the instant: {TIME_FORMS}; default now")] = None,
) -> Response:
    now = time.time()
    org = audited_org(principal, org)   # as for the audit: an org admin asks about its own org only
    q = checked_query({"org": org, "repository": repository, "tag": tag, "at": at}, None, None)
    org, repository, tag = _required("org", q["org"]), _required("repository", q["repository"]), \
        _required("tag", q["tag"])
    instant = parse_time(q["at"], "at", now)
    instant = now if instant is None else instant
    try:
        answer = await anyio.to_thread.run_sync(history.tag_at, org, repository, tag, instant)
    except TagNotCachedThen as error:
        body = admin_body("not_found", error.message)
        body["error"].update(at=iso(instant), previous=_shown(error.around["previous"]),
                             next=_shown(error.around["next"]))
        return Response(body, status_code=404)
    found = answer.as_dict()
    return Response({**_shown({key: value for key, value in found.items() if key not in ("previous", "next")}),
                     "previous": _shown(found["previous"]), "next": _shown(found["next"])})


@get("/history/digest", tags=["history"])
async def history_digest(
    history: NamedDependency[History],
    principal: NamedDependency[Principal],
    digest: Annotated[str | None, QueryParameter(description="the manifest digest, e.g. sha256:…")] = None,
    org: Annotated[str | None, QueryParameter(
        description="only this organization's pulls (an org admin: its own, whatever it asks)")] = None,
    since: Annotated[str | None, QueryParameter(description=f"inclusive: {TIME_FORMS}")] = None,
    until: Annotated[str | None, QueryParameter(description="exclusive; the same forms as since")] = None,
    cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
    limit: Annotated[int | None, QueryParameter(description="rows per page (1-1000, default 100)")] = None,
) -> Response:
    now = time.time()
    org = audited_org(principal, org)
    q = checked_query({"digest": digest, "org": org, "since": since, "until": until}, cursor, limit)
    digest = _required("digest", q["digest"])
    page = await anyio.to_thread.run_sync(
        lambda: history.digest_pulls(digest, parse_time(q["since"], "since", now), parse_time(q["until"], "until", now),
                                     q["org"], cursor, 100 if limit is None else limit))
    # When tags pointed at it, with the first page only: not paged, and the same for every page.
    resolutions = [] if cursor else await anyio.to_thread.run_sync(history.resolutions, digest, q["org"])
    items = []
    for row in page.rows:
        item = as_item(row)
        # By tag: the tag resolved to the digest then. By digest: the client asked for it by name.
        item["via"] = ("digest" if row.reference == row.digest else
                       "referrers" if row.reference.startswith("referrers:") else "tag")
        items.append(item)
    return Response({"items": items, "next_cursor": page.next_cursor,
                     "resolutions": [_shown(resolution) for resolution in resolutions]})
