"""HTTP Range for blobs: one `bytes=` range (a-b, a-, -n)."""

from __future__ import annotations

import re

from application.errors import RangeNotSatisfiable
from interfaces.http.errors import OciError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BEYOND_ANY_BLOB = 10**18   # what a position of more digits than this means: past the end of any blob


def _position(digits: str) -> int:
    """A byte position; one with thousands of digits is simply past the end (and int() refuses
    more than 4300 digits, which must not become a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_BLOB


def parse_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """[start, end) to serve, or None for the whole blob. Raises for ranges we cannot serve."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        raise OciError("RANGE_INVALID", 400, f"unsupported Range header {header[:100]!r}: use one bytes=a-b range")
    if size is None:
        raise OciError("RANGE_INVALID", 416, "the blob's size is not known yet; retry without Range")
    first, last = match[1], match[2]
    if not first:  # a suffix: the last n bytes
        length = _position(last)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size
    start = _position(first)
    end = size if not last else min(_position(last) + 1, size)
    if last and _position(last) < start:
        raise OciError("RANGE_INVALID", 400, f"invalid Range header {header[:100]!r}")
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end
