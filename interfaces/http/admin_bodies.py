"""Admin API request bodies: JSON only, at most 64 KiB, no duplicate keys, strictly typed, derived from OrgSettings."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException

from application.admin import InvalidRequest
from application.prewarm import MAX_REFERENCES
from domain.org_settings import MAX_ORG_NAME, MAX_PASSWORD, derived_struct, invalid

MAX_BODY = 64 * 1024   # an org's settings are a few hundred bytes; the bound keeps hostile bodies cheap
Password = Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)] | None
_STRUCT = {"forbid_unknown_fields": True, "kw_only": True}

# The password is write-only: null (or absent) keeps the stored one on update, "" clears it.
OrgSettingsBody = derived_struct("OrgSettingsBody", last=[("password", Password, None)], **_STRUCT)
OrgCreateBody = derived_struct(
    "OrgCreateBody", first=[("name", Annotated[str, msgspec.Meta(max_length=MAX_ORG_NAME)])],
    last=[("password", Password, None)], **_STRUCT)
OrgChangesBody = derived_struct("OrgChangesBody", last=[("password", Password | msgspec.UnsetType, msgspec.UNSET)],
                                optional=True, **_STRUCT)



class PrewarmBody(msgspec.Struct, forbid_unknown_fields=True):
    """`{"references": ["library/alpine:3.20", "team/app@sha256:..."]}`"""

    references: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=512)]],
                          msgspec.Meta(min_length=1, max_length=MAX_REFERENCES)]


class UnsupportedMediaType(HTTPException):
    status_code = 415


class PayloadTooLarge(HTTPException):
    status_code = 413


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ClientException(f"the body repeats the key {key[:100]!r}")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise ClientException(f"{name} is not JSON")


def decode(raw: bytes, content_type: str, kind: type[msgspec.Struct]) -> Any:
    """Bytes of a request to `kind`: 415, 413, 400 for what is not a JSON object, 422 naming a bad field."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType(f"the body must be application/json, got {media[:100] or 'no content type'!r}")
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"the body must be at most {MAX_BODY} bytes")
    try:
        document = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise ClientException("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:   # JSONDecodeError is a ValueError
        raise ClientException(f"the body is not JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict):
        raise ClientException("the body must be a JSON object")
    try:
        return msgspec.convert(document, kind, strict=True)
    except msgspec.ValidationError as error:
        problem = invalid(error)
        raise InvalidRequest(str(problem), {problem.field or "body": str(problem)}) from None


async def read_body(request: Request, kind: type[msgspec.Struct]) -> Any:
    # Litestar refuses a larger body (413) before reading it whole: request_max_body_size on the router.
    return decode(await request.body(), request.headers.get("content-type", ""), kind)


def fields_of(body: msgspec.Struct) -> dict:
    return {name: value for name in body.__struct_fields__
            if (value := getattr(body, name)) is not msgspec.UNSET}
