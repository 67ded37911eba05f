"""The rebuild's fast decoder of pull events (infra/projection_runtime/decoding.py) gives the mapper's events,
field for field, for every stored version of Pull.Recorded, on SQLite and PostgreSQL; anything else falls back."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import StoredEvent

from application.cache_records import CacheRecords
from application.pulls import Pulls
from domain.pull import Pull
from infra.projection_runtime.decoding import PageDecoder

pytestmark = pytest.mark.integration

# What each stored version lacked (None: written before versions were recorded; the library reads it as 1).
SHAPES = {None: ("note", "status", "error_code", "actor", "generation"),
          1: ("note", "status", "error_code", "actor", "generation"),
          2: ("status", "error_code", "actor", "generation"),
          3: ("actor", "generation"),
          4: ("generation",),
          5: ()}


@pytest.fixture
def env(env_factory):
    return env_factory("decode")


@pytest.fixture
def pulls(env):
    app = Pulls(env=env)
    yield app
    app.close()


def _event(n: int) -> Pull.Recorded:
    return Pull.recorded("hub", f"library/ïmage{n}", "3.19" if n % 2 else "sha256:" + "a" * 64, "sha256:" + "1" * 64,
                         ("hit", "miss", "stale", "error", "denied")[n % 5], f"10.0.0.{n}", "containerd/2.0 \"quoted\" ✓",
                         1_700_000_000.123456 + n / 7, note="upstream said\n503" if n % 3 else "", status=(200, 503)[n % 2],
                         error_code="" if n % 2 == 0 else "UNAVAILABLE", actor=("anonymous", "private+ci", "admin")[n % 3],
                         generation=1 + n % 3)


def _store(pulls: Pulls, event: Pull.Recorded, version: int | None) -> None:
    """Store the event as the code of `version` would have: without the later fields, with that class_version."""
    stored = pulls.mapper.to_stored_event(event)
    state = pulls.mapper.transcoder.decode(stored.state)
    for name in (*SHAPES[version], "class_version"):
        state.pop(name, None)
    if version is not None:
        state["class_version"] = version
    pulls.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                              pulls.mapper.transcoder.encode(state))])


def _same(fast, slow) -> None:
    assert type(fast) is type(slow)
    assert fast.__dict__ == slow.__dict__
    assert [type(value) for value in fast.__dict__.values()] == [type(value) for value in slow.__dict__.values()]
    assert list(fast.__dict__) == list(slow.__dict__)


def test_every_stored_version_of_a_pull_decodes_to_the_mappers_event(pulls):
    for n, version in enumerate([*SHAPES] * 3):
        _store(pulls, _event(n), version)
    page = pulls.recorder.select_notifications(start=None, limit=100)
    decoder = PageDecoder(pulls.mapper)
    assert decoder.fast and len(page) == 3 * len(SHAPES)
    for notification, fast in zip(page, decoder.page(page)):
        _same(fast, pulls.mapper.to_domain_event(notification))
    # The upcasts ran: an old pull reads with the defaults of the fields it lacked.
    oldest = decoder.decode(page[0])
    assert (oldest.note, oldest.status, oldest.error_code, oldest.actor, oldest.generation) == ("", 200, "", "anonymous", 1)


def test_a_pull_whose_state_is_not_flat_and_other_events_go_to_the_mapper(env, pulls):
    event = _event(1)
    stored = pulls.mapper.to_stored_event(event)
    state = pulls.mapper.transcoder.decode(stored.state)
    state["note"] = {"_type_": "uuid_hex", "_data_": "1" * 32}   # a value the object hook turns into a UUID
    pulls.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                              pulls.mapper.transcoder.encode(state))])
    records = CacheRecords(env=env)
    try:
        records.apply_org("hub", {"upstream": "docker.io"})
        others = records.recorder.select_notifications(start=None, limit=10)
        decoder = PageDecoder(records.mapper)
        for notification in others:
            _same(decoder.decode(notification), records.mapper.to_domain_event(notification))
    finally:
        records.close()
    notification = pulls.recorder.select_notifications(start=None, limit=10)[0]
    decoded = PageDecoder(pulls.mapper).decode(notification)
    _same(decoded, pulls.mapper.to_domain_event(notification))
    assert str(decoded.note) == "1" * 8 + "-" + "1" * 4 + "-" + "1" * 4 + "-" + "1" * 4 + "-" + "1" * 12


def test_a_compressed_or_enciphered_log_is_left_to_the_mapper(env_factory):
    env = {**env_factory("decodez"), "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"}
    app = Pulls(env=env)
    try:
        app.write([_event(2)])
        decoder = PageDecoder(app.mapper)
        assert not decoder.fast
        notification = app.recorder.select_notifications(start=None, limit=10)[0]
        _same(decoder.decode(notification), app.mapper.to_domain_event(notification))
    finally:
        app.close()
