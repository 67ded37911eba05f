"""Pull.Recorded changed shape over time: events stored in an older shape load with the newer fields' defaults."""

from __future__ import annotations

from eventsourcing.persistence import StoredEvent

from application.pulls import Pulls
from domain.pull import Pull


def _store_in_old_shape(pulls: Pulls, pull: Pull, drop: tuple[str, ...], version: int | None) -> None:
    """Store the pull's event as code of an older version would have: without `drop`, with `version` (None: none)."""
    stored = pulls.mapper.to_stored_event(pull.collect_events()[0])
    state = pulls.mapper.transcoder.decode(stored.state)
    for name in (*drop, "class_version"):
        state.pop(name, None)
    if version is not None:
        state["class_version"] = version
    pulls.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                              pulls.mapper.transcoder.encode(state))])


def _pull(**extra) -> Pull:
    return Pull(org="hub", repository="library/alpine", reference="3.19", digest="sha256:" + "1" * 64,
                result="stale", client="10.0.0.7", user_agent="containerd/2.0", at=10.0, **extra)


def test_a_pull_stored_before_notes_and_statuses_loads_with_their_defaults():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull()
    _store_in_old_shape(pulls, pull, drop=("note", "status", "error_code"), version=None)
    loaded = pulls.repository.get(pull.id)
    assert (loaded.note, loaded.status, loaded.error_code) == ("", 200, "")
    assert (loaded.org, loaded.result, loaded.at) == ("hub", "stale", 10.0)


def test_a_pull_stored_with_a_note_but_no_version_keeps_its_note():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull(note="upstream answered 503")
    _store_in_old_shape(pulls, pull, drop=("status", "error_code"), version=None)
    event = pulls.mapper.to_domain_event(pulls.recorder.select_notifications(start=None, limit=10)[0])
    assert (event.note, event.status, event.error_code) == ("upstream answered 503", 200, "")


def test_a_pull_stored_in_version_two_gains_status_and_error_code():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull(note="timeout")
    _store_in_old_shape(pulls, pull, drop=("status", "error_code"), version=2)
    event = pulls.mapper.to_domain_event(pulls.recorder.select_notifications(start=None, limit=10)[0])
    assert (event.note, event.status, event.error_code) == ("timeout", 200, "")


def test_a_pull_stored_in_version_three_was_anonymous():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull(note="timeout", status=503, error_code="UNAVAILABLE")
    _store_in_old_shape(pulls, pull, drop=("actor",), version=3)
    event = pulls.mapper.to_domain_event(pulls.recorder.select_notifications(start=None, limit=10)[0])
    assert (event.actor, event.note, event.status, event.error_code) == ("anonymous", "timeout", 503, "UNAVAILABLE")


def test_a_pull_stored_before_versions_was_anonymous_too():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull()
    _store_in_old_shape(pulls, pull, drop=("note", "status", "error_code", "actor"), version=None)
    assert pulls.repository.get(pull.id).actor == "anonymous"


def test_a_new_pull_is_stored_with_its_class_version_and_reads_back_unchanged():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull(note="x", status=503, error_code="UNAVAILABLE", actor="private+ci", generation=2)
    pulls.record(pull)
    stored = pulls.recorder.select_notifications(start=None, limit=10)[0]
    assert pulls.mapper.transcoder.decode(stored.state)["class_version"] == 5
    event = pulls.mapper.to_domain_event(stored)
    assert (event.note, event.status, event.error_code, event.actor, event.generation) == \
        ("x", 503, "UNAVAILABLE", "private+ci", 2)


def test_a_pull_stored_in_version_four_was_of_the_first_org_of_its_name():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    pull = _pull(actor="hub+ci")
    _store_in_old_shape(pulls, pull, drop=("generation",), version=4)
    event = pulls.mapper.to_domain_event(pulls.recorder.select_notifications(start=None, limit=10)[0])
    assert (event.generation, event.actor) == (1, "hub+ci")


def test_the_event_of_a_new_pull_made_without_the_aggregate_is_the_one_the_aggregate_records():
    fields = dict(org="hub", repository="library/alpine", reference="3.19", digest="sha256:" + "1" * 64,
                  result="error", client="10.0.0.7", user_agent="containerd/2.0", at=10.0, note="gone",
                  status=404, error_code="MANIFEST_UNKNOWN", actor="hub+ci", generation=3)
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    by_aggregate, direct = Pull(**fields).collect_events()[0], Pull.recorded(**fields)
    stored = [pulls.mapper.to_stored_event(e) for e in (by_aggregate, direct)]
    states = [pulls.mapper.transcoder.decode(s.state) for s in stored]
    for state in states:
        state.pop("timestamp")
    assert stored[0].topic == stored[1].topic and stored[0].originator_version == stored[1].originator_version == 1
    assert states[0] == states[1]
    assert Pull.recorded(**fields).originator_id != direct.originator_id   # a fresh id per pull

    pulls.write([direct])
    loaded = pulls.repository.get(direct.originator_id)
    assert isinstance(loaded, Pull) and loaded.version == 1
    assert {name: getattr(loaded, name) for name in fields} == fields
