"""Errors to OCI error responses: application errors through the one table (application/oci_errors.py)."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException

from application import errors as app
from application.oci_errors import INTERNAL_ERROR, oci_answer

log = logging.getLogger(__name__)
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class OciError(Exception):
    """An error raised by the edge itself (bad query parameters, unsupported methods)."""

    def __init__(self, code: str, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.headers = code, status, message, headers or {}


def oci_body(code: str, message: str, detail=None) -> dict:
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


def error_response(request: Request, error: Exception) -> Response:
    headers = dict(API_VERSION)
    if isinstance(error, OciError):
        headers.update(error.headers)
        return Response(oci_body(error.code, error.message), status_code=error.status, headers=headers)
    answer = oci_answer(error)
    if answer is not None:
        if isinstance(error, app.UpstreamRateLimited) and error.retry_after is not None:
            headers["Retry-After"] = str(error.retry_after)
        if isinstance(error, app.RangeNotSatisfiable):
            headers["Content-Range"] = f"bytes */{error.size}"
        return Response(oci_body(answer.code, answer.message, getattr(error, "detail", None)),
                        status_code=answer.status, headers=headers)
    if isinstance(error, MethodNotAllowedException):
        return Response(oci_body("UNSUPPORTED", "this registry is a read-only cache: only pulls are supported"),
                        status_code=405, headers=headers)
    if isinstance(error, NotFoundException):
        return Response(oci_body("NAME_UNKNOWN", "no such endpoint"), status_code=404, headers=headers)
    if isinstance(error, HTTPException):
        return Response(oci_body("UNKNOWN", error.detail), status_code=error.status_code,
                        headers={**headers, **(error.headers or {})})
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return Response(oci_body(INTERNAL_ERROR.code, INTERNAL_ERROR.message), status_code=INTERNAL_ERROR.status,
                    headers=headers)
