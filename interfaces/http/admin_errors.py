"""One table from errors to the admin API's JSON errors: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import logging
import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from application.access import RobotExists, RobotUnknown
from application.admin import InvalidRequest, OrgConflict, OrgExists, OrgFromConfig
from application.retention_admin import ImageUnknown
from application.errors import EventStoreUnavailable, OrgUnknown, ReadModelUnavailable

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
ADMIN_ERRORS: list[tuple[type[Exception], str, int]] = [
    (InvalidRequest, "invalid", 422),
    (OrgUnknown, "not_found", 404),
    (RobotUnknown, "not_found", 404),
    (RobotExists, "conflict", 409),
    (ImageUnknown, "not_found", 404),
    (OrgExists, "conflict", 409),
    (OrgConflict, "conflict", 409),
    (OrgFromConfig, "conflict", 409),
    (EventStoreUnavailable, "unavailable", 503),
    (ReadModelUnavailable, "unavailable", 503),
]
# The database down, refusing or timing out under an admin call that reached it without our bounds
# (eventsourcing's or psycopg's own errors): a 503 the caller may retry, never a 500.
DATABASE_DOWN = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
DATABASE_DOWN_MESSAGE = "the database is unavailable; try again shortly"
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
              422: "invalid", 503: "unavailable"}
_NAMED_FIELD = re.compile(r"field `([^`]+)`")


def admin_body(code: str, message: str, fields: dict[str, str] | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def validation_fields(error: ValidationException) -> dict[str, str]:
    """Litestar reports a body's missing or unknown field under the key `data`; name the field instead."""
    fields = {}
    for item in error.extra or []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid"))
        key = item.get("key") or "body"
        named = _NAMED_FIELD.search(message)
        fields[named[1] if key == "data" and named else key] = message
    return fields


def admin_error_response(request: Request, error: Exception) -> Response:
    for kind, code, status in ADMIN_ERRORS:
        if isinstance(error, kind):
            message = getattr(error, "message", None) or str(error)
            return Response(admin_body(code, message, getattr(error, "fields", None)), status_code=status,
                            headers={"Retry-After": "1"} if status == 503 else None)
    if isinstance(error, DATABASE_DOWN):
        log.warning("%s %s: the database is unavailable: %s", request.method, request.url.path,
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return Response(admin_body("unavailable", DATABASE_DOWN_MESSAGE), status_code=503,
                        headers={"Retry-After": "1"})
    if isinstance(error, ValidationException):
        # Well-formed JSON (or query) with wrong fields or types: unprocessable, field by field.
        return Response(admin_body("invalid", "the request has invalid fields", validation_fields(error)),
                        status_code=422)
    if isinstance(error, HTTPException):
        code = HTTP_CODES.get(error.status_code, "error")
        return Response(admin_body(code, error.detail), status_code=error.status_code, headers=error.headers)
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return Response(admin_body("internal", "internal error"), status_code=500)
