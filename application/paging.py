"""Keyset cursors for the admin API's pages: the last row's key, handed out opaque and checked on return."""

from __future__ import annotations

import base64
import binascii
import json

from application.errors import InvalidRequest

MAX_PAGE = 1000      # rows per page, as the audit API
MAX_CURSOR = 2048    # characters: a key of two names, each at most 255, base64-encoded


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}",
                             {"limit": f"must be between 1 and {MAX_PAGE}, got {limit}"[:200]})
    return limit


def encode_cursor(*key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> tuple[str, ...] | None:
    """The key a cursor of ours carries; anything else is a 400 naming the cursor, never a query."""
    if cursor is None or cursor == "":
        return None
    try:
        if len(cursor) > MAX_CURSOR or not cursor.isascii():
            raise ValueError
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (not isinstance(key, list) or len(key) != arity
                or not all(isinstance(part, str) and part.isprintable() for part in key)):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("invalid cursor", {"cursor": "not a cursor this server handed out"}) from None
    return tuple(key)
