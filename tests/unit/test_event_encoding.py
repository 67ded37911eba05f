"""The Pulls mapper's fast path writes the very bytes eventsourcing's own mapper writes, for every kind of
value a pull carries; anything it cannot vouch for goes to the library's mapper (and so is equal too)."""

from __future__ import annotations

import math

import pytest
from eventsourcing.persistence import Mapper

from application.pulls import Pulls
from domain.pull import Pull
from infra import event_encoding
from infra.event_encoding import PullMapper
from infra.persistence import embedded_env

TEXTS = ["", "hub", "library/alpine", "sha256:" + "ab" * 32, 'say "hi"', "back\\slash", "/path/</tag>&'x'",
         "café", "中文", "emoji 😀", "tab\there", "new\nline", "nul\x00", "del\x7f", "sep\u2028arator",
         "soft\u00adhyphen", "bell\x07"]
FLOATS = [1764525000.123456, 0.1, 1e-7, 1e16, 123.0, 5e-324, 1.7976931348623157e308, -0.0, 2.5, math.nan,
          math.inf]


@pytest.fixture(scope="module")
def library():
    return Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


@pytest.fixture(scope="module")
def fast(library):
    return PullMapper(transcoder=library.transcoder)


def events():
    for i, text in enumerate(TEXTS):
        yield Pull.recorded("hub", text, "v1", "", "hit", "10.0.0.1", text, 1764525000.5 + i, note=text,
                            actor=text, error_code=text)
    for number in FLOATS:
        event = Pull.recorded("hub", "library/alpine", "3.19", "sha256:" + "cd" * 32, "miss", "::1", "skopeo",
                              1.0, status=503, generation=7)
        vars(event)["at"] = number   # any float, not only one a pull's id can be made from
        yield event


@pytest.mark.parametrize("event", list(events()))
def test_a_pull_is_stored_as_the_library_stores_it(library, fast, event):
    ours, theirs = fast.to_stored_event(event), library.to_stored_event(event)
    assert ours == theirs   # originator id, version, topic and the state's bytes
    back = library.to_domain_event(fast.to_stored_event(event))
    assert type(back) is Pull.Recorded
    assert {k: v for k, v in vars(back).items() if k != "at"} == {k: v for k, v in vars(event).items() if k != "at"}


def test_the_fast_path_takes_plain_pulls_and_leaves_the_rest(library, fast, monkeypatch):
    taken = []
    encoded = event_encoding._encoded_flat
    monkeypatch.setattr(event_encoding, "_encoded_flat", lambda state: taken.append(result := encoded(state)) or result)
    fast.to_stored_event(Pull.recorded("hub", "library/alpine", "3.19", "", "hit", "::1", "podman/5", 1.5))
    fast.to_stored_event(Pull.recorded("hub", "library/alpine", "3.19", "", "hit", "::1", "bad\x1b[0m", 1.5))
    not_finite = Pull.recorded("hub", "library/alpine", "3.19", "", "hit", "::1", "podman/5", 1.5)
    vars(not_finite)["at"] = math.nan
    fast.to_stored_event(not_finite)
    assert [result is not None for result in taken] == [True, False, False]


def test_a_mapper_with_a_cipher_or_compressor_is_not_taken_over(library):
    class Squash:
        def compress(self, data: bytes) -> bytes:
            return data[::-1]

        def decompress(self, data: bytes) -> bytes:
            return data[::-1]

    squashed = PullMapper(transcoder=library.transcoder, compressor=Squash())
    event = Pull.recorded("hub", "library/alpine", "3.19", "", "hit", "::1", "podman/5", 1.5)
    assert squashed.to_stored_event(event) == Mapper(library.transcoder, compressor=Squash()).to_stored_event(event)


def test_the_embedded_pulls_app_is_given_the_pull_mapper(tmp_path):
    app = Pulls(env=embedded_env(tmp_path))
    try:
        assert type(app.mapper) is PullMapper and app.events.mapper is app.mapper
    finally:
        app.close()
