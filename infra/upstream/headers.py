"""Reading and writing the HTTP headers a registry conversation depends on."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

import httpx

from application.ports import RateLimit

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
# Content types some registries put on manifests instead of the real media type.
GENERIC_TYPES = {"", "application/json", "text/plain", "application/octet-stream"}


def accept_header(accept: list[str]) -> str:
    """Every media type the client accepts, in one header, plus every current manifest type.

    A registry answers a request that does not name schema 2 (one type only, or `*/*`) with a
    down-converted schema 1 manifest whose digest differs; a cache shared by every client must
    always fetch the manifest as upstream stores it, so the current types are always asked for.
    """
    types = [value.strip() for entry in accept for value in entry.split(",") if value.strip()]
    types = [value for value in types if not value.startswith("*/")]
    return ", ".join(dict.fromkeys([*types, *MANIFEST_MEDIA_TYPES]))


def media_type(response: httpx.Response, content: bytes = b"") -> str:
    declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if declared in GENERIC_TYPES and content:
        try:
            return str(json.loads(content).get("mediaType") or declared)
        except (ValueError, AttributeError):
            pass
    return declared


def _count(value: str | None) -> tuple[int | None, int | None]:
    """`100;w=21600` -> (100, 21600); a bare `100` -> (100, None)."""
    if not value:
        return None, None
    number, *params = value.split(";")
    window = next((p.split("=", 1)[1] for p in params if p.strip().startswith("w=")), None)
    try:
        return int(number.strip()), int(window.strip()) if window else None
    except ValueError:
        return None, None


def rate_limit(headers: httpx.Headers) -> RateLimit | None:
    limit, window = _count(headers.get("ratelimit-limit"))
    remaining, remaining_window = _count(headers.get("ratelimit-remaining"))
    if limit is None and remaining is None:
        return None
    return RateLimit(limit=limit, remaining=remaining, window_seconds=window or remaining_window)


def retry_after(headers: httpx.Headers) -> int | None:
    """Seconds from `Retry-After`, given either as seconds or as an HTTP date."""
    value = headers.get("Retry-After", "").strip()
    if value.isdigit():
        return int(value)
    try:
        return max(0, int(parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError, IndexError):
        return None


def next_link(response: httpx.Response) -> str | None:
    """The URL of the next page of a paged answer: the `Link` entry whose rel is next (httpx parses it)."""
    for link in response.links.values():
        if link.get("rel", "").lower() == "next":   # relation types are case-insensitive (RFC 8288)
            return link.get("url") or None
    return None


def oci_error_code(body: bytes) -> str | None:
    """The first code of an OCI error body such as {"errors":[{"code":"MANIFEST_UNKNOWN",...}]}."""
    try:
        return str(json.loads(body)["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
