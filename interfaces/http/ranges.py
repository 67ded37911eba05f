"""HTTP Range for blobs: one `bytes=` range (a-b, a-, -n); any other Range is refused with 416."""

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
    """[start, end) to serve, or None for the whole blob. Raises for ranges we cannot serve.

    RFC 9110 §14.2 lets a server reject a Range it cannot use, and rejecting is a 416 with
    `Content-Range: bytes */<size>`, never a 400: the distribution-spec conformance suite asks
    exactly that of `bytes=500-0` (end before start), and Go's http.ServeContent, which the
    reference registry serves blobs with, answers every unusable Range so (other units, several
    ranges, bad syntax). One shape for all of them keeps clients' retry logic simple.
    """
    if header is None:
        return None
    if size is None:
        raise OciError("RANGE_INVALID", 416, "the blob's size is not known yet; retry without Range")
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        raise RangeNotSatisfiable(size, f"unsupported Range header {header[:100]!r}: use one bytes=a-b range")
    first, last = match[1], match[2]
    if not first:  # a suffix: the last n bytes
        length = _position(last)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size
    start = _position(first)
    if last and _position(last) < start:   # RFC 9110 §14.1.1: an invalid range-spec
        raise RangeNotSatisfiable(size, f"invalid Range header {header[:100]!r}: it ends before it starts")
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size if not last else min(_position(last) + 1, size)
    return start, end
