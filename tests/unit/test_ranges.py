"""Range headers for blobs: one bytes= range; anything else a 416 with the size, never a 500."""

from __future__ import annotations

import pytest

from application.errors import RangeNotSatisfiable
from interfaces.http.errors import OciError
from interfaces.http.ranges import parse_range

HUGE = "9" * 5000  # int() refuses more than 4300 digits


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-9", (0, 10)), ("bytes=10-", (10, 100)), ("bytes=-5", (95, 100)),
    ("bytes=90-1000", (90, 100)), (f"bytes=90-{HUGE}", (90, 100)), (f"bytes=-{HUGE}", (0, 100)),
    ("bytes=0000000000000000000000000000000000000005-9", (5, 10)),
])
def test_a_satisfiable_range_is_the_bytes_to_send(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}", "bytes=100-", "bytes=-0"])
def test_a_range_starting_past_the_end_is_not_satisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=500-0", f"bytes={HUGE}-1", "bytes=-", "items=0-1",
                                    "bytes=0-1,3-4", "bytes=" + "1" * 10_000 + "x-"])
def test_a_range_we_cannot_serve_is_refused_as_not_satisfiable_with_a_short_message(header):
    # RFC 9110 §14.2 and the distribution-spec conformance suite ("range 500-0"): a 416 with
    # Content-Range: bytes */<size> (the edge adds it from .size), never a 400.
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, 100)
    assert raised.value.size == 100 and len(raised.value.message) < 200


def test_a_range_on_a_blob_of_unknown_size_is_a_416_without_a_size():
    with pytest.raises(OciError) as raised:
        parse_range("bytes=0-1", None)
    assert raised.value.status == 416 and raised.value.code == "RANGE_INVALID"
