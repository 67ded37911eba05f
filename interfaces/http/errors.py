"""One table from errors to OCI error responses (code, HTTP status)."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException

from application import errors as app
from application.ports import BlobStorageUnavailable
from domain.names import InvalidDigest, InvalidName, InvalidReference

log = logging.getLogger(__name__)
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class OciError(Exception):
    """An error raised by the edge itself (bad query parameters, unsupported methods)."""

    def __init__(self, code: str, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.headers = code, status, message, headers or {}


# Most specific first: the first matching class decides.
ERROR_TABLE: list[tuple[type[Exception], str, int]] = [
    (InvalidName, "NAME_INVALID", 400),
    (InvalidDigest, "DIGEST_INVALID", 400),
    (InvalidReference, "TAG_INVALID", 400),
    (app.OrgUnknown, "NAME_UNKNOWN", 404),
    (app.ManifestUnknown, "MANIFEST_UNKNOWN", 404),
    (app.BlobUnknown, "BLOB_UNKNOWN", 404),
    (app.UpstreamNotFound, "NAME_UNKNOWN", 404),
    (app.RangeNotSatisfiable, "RANGE_INVALID", 416),
    (app.ManifestTooLarge, "MANIFEST_INVALID", 502),
    (app.UpstreamRateLimited, "TOOMANYREQUESTS", 429),
    (app.UpstreamUnauthorized, "DENIED", 502),
    (app.UpstreamBadContent, "DIGEST_INVALID", 502),
    (app.UpstreamUnavailable, "UNAVAILABLE", 503),
    (BlobStorageUnavailable, "UNAVAILABLE", 503),
    (app.UpstreamError, "UNAVAILABLE", 502),
]


def oci_body(code: str, message: str, detail=None) -> dict:
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


def error_response(request: Request, error: Exception) -> Response:
    headers = dict(API_VERSION)
    if isinstance(error, OciError):
        headers.update(error.headers)
        return Response(oci_body(error.code, error.message), status_code=error.status, headers=headers)
    for kind, code, status in ERROR_TABLE:
        if isinstance(error, kind):
            message = getattr(error, "message", None) or str(error)
            detail = getattr(error, "detail", None)
            if isinstance(error, app.UpstreamRateLimited) and error.retry_after is not None:
                headers["Retry-After"] = str(error.retry_after)
            if isinstance(error, app.RangeNotSatisfiable):
                headers["Content-Range"] = f"bytes */{error.size}"
            return Response(oci_body(code, message, detail), status_code=status, headers=headers)
    if isinstance(error, MethodNotAllowedException):
        return Response(oci_body("UNSUPPORTED", "this registry is a read-only cache: only pulls are supported"),
                        status_code=405, headers=headers)
    if isinstance(error, NotFoundException):
        return Response(oci_body("NAME_UNKNOWN", "no such endpoint"), status_code=404, headers=headers)
    if isinstance(error, HTTPException):
        return Response(oci_body("UNKNOWN", error.detail), status_code=error.status_code,
                        headers={**headers, **(error.headers or {})})
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return Response(oci_body("UNKNOWN", "internal error"), status_code=500, headers=headers)
