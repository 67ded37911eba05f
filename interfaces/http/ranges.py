"""HTTP Range for blobs: one `bytes=` range (a-b, a-, -n)."""

from __future__ import annotations

import re

from application.errors import RangeNotSatisfiable
from interfaces.http.errors import OciError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """[start, end) to serve, or None for the whole blob. Raises for ranges we cannot serve."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        raise OciError("RANGE_INVALID", 400, f"unsupported Range header {header!r}: use one bytes=a-b range")
    if size is None:
        raise OciError("RANGE_INVALID", 416, "the blob's size is not known yet; retry without Range")
    first, last = match[1], match[2]
    if not first:  # a suffix: the last n bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        raise OciError("RANGE_INVALID", 400, f"invalid Range header {header!r}")
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end
