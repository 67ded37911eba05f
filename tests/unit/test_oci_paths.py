"""The raw request path of the pull API: parsed as the client sent it, kept for repeated pulls, bad paths never kept."""

from __future__ import annotations

import pytest

from domain.names import InvalidName
from interfaces.http.errors import OciError
from interfaces.http.oci import _parsed_raw, path_as_sent


def test_a_plain_path_is_its_own_segments():
    assert path_as_sent(b"/v2/hub/library/alpine/manifests/3.20") == "/hub/library/alpine/manifests/3.20"
    assert _parsed_raw(b"/v2/hub/library/alpine/manifests/3.20") == ("hub/library/alpine", "manifests", "3.20")
    assert _parsed_raw(b"/v2/hub/library/alpine/tags/list") == ("hub/library/alpine", "tags", "")


def test_encoded_characters_are_decoded_per_segment():
    assert _parsed_raw(b"/v2/hub/library/alpine/manifests/sha256%3A" + b"a" * 64) == (
        "hub/library/alpine", "manifests", "sha256:" + "a" * 64)


def test_a_path_outside_v2_is_left_to_the_router():
    assert path_as_sent(b"/other/hub/alpine/manifests/1") is None
    assert _parsed_raw(b"/other/hub/alpine/manifests/1") is None


@pytest.mark.parametrize("raw", [b"/v2/hub/a%2Fb/manifests/1", b"/v2/hub//alpine/manifests/1",
                                 b"/v2/hub/alpine%ff/manifests/1", b"/v2/Hub/alpine/manifests/1"])
def test_an_invalid_name_is_refused_every_time_it_is_sent(raw):
    for _ in range(2):   # errors are raised, never remembered as a parse
        with pytest.raises(InvalidName):
            _parsed_raw(raw)


def test_an_unknown_endpoint_is_refused_every_time_it_is_sent():
    for _ in range(2):
        with pytest.raises(OciError):
            _parsed_raw(b"/v2/hub/alpine/uploads/")
