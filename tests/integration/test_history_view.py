"""The history view on SQLite and PostgreSQL: a tag's resolutions as intervals, drops, org deletes and restores."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import Tracking

from domain.cache import TagResolution
from domain.org import CacheOrg
from infra.projection_runtime import open_view

pytestmark = pytest.mark.integration
ORG, REPO, TAG = "hub", "library/alpine", "latest"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture
def history(env_factory):
    view = open_view("history", env_factory("main"))
    yield view
    view.close()


def feed(view, *aggregates):
    """Every pending event of the aggregates, in the order given, tracked as Registry's next notifications."""
    start = (view.max_tracking_id("Registry") or 0) + 1
    evts = [event for aggregate in aggregates for event in aggregate.collect_events()]
    view.process([(event, Tracking("Registry", start + i)) for i, event in enumerate(evts)])


def digest_at(view, at):
    interval = view.at(ORG, REPO, TAG, at)
    return interval and interval.digest


def test_a_tag_moved_twice_answers_each_instant_with_its_digest(history):
    tag = TagResolution(org=ORG, repository=REPO, tag=TAG, digest=D1, media_type=IMAGE, checked_at=100.0)
    feed(history, tag)
    tag.observe(D1, IMAGE, 150.0)          # revalidated: no change
    tag.observe(D2, IMAGE, 200.0)
    feed(history, tag)
    tag.observe(D3, IMAGE, 300.0)
    feed(history, tag)

    assert [digest_at(history, t) for t in (99.9, 100.0, 199.9, 200.0, 250.0, 300.0, 10**9)] == \
        [None, D1, D1, D2, D2, D3, D3]
    middle = history.at(ORG, REPO, TAG, 250.0)
    assert (middle.since, middle.until, middle.opened_by, middle.ended_by) == (200.0, 300.0, "retargeted", "retargeted")
    assert history.previous(middle).digest == D1
    assert history.after(ORG, REPO, TAG, 250.0).digest == D3
    assert history.after(ORG, REPO, TAG, 300.0) is None
    assert history.at(ORG, "library/other", TAG, 250.0) is None


def test_a_dropped_tag_resolves_to_nothing_until_it_is_resolved_again(history):
    tag = TagResolution(org=ORG, repository=REPO, tag=TAG, digest=D1, media_type=IMAGE, checked_at=100.0)
    tag.drop("flush", 150.0)
    feed(history, tag)
    assert digest_at(history, 149.0) == D1
    assert digest_at(history, 150.0) is None
    assert history.before(ORG, REPO, TAG, 160.0).ended_by == "flush"
    tag.observe(D1, IMAGE, 400.0)          # after a drop the same digest is a retarget from ""
    feed(history, tag)
    assert [digest_at(history, t) for t in (399.0, 400.0)] == [None, D1]


def test_an_org_delete_ends_its_tags_and_a_new_org_of_the_name_restores_none(history):
    org = CacheOrg(name=ORG, settings={"upstream": "https://registry-1.docker.io"})
    tag = TagResolution(org=ORG, repository=REPO, tag=TAG, digest=D1, media_type=IMAGE, checked_at=100.0)
    feed(history, org, tag)
    org.delete()
    feed(history, org)
    deleted = history.before(ORG, REPO, TAG, 10**10)
    assert deleted.ended_by == "org deleted" and deleted.until is not None
    assert digest_at(history, deleted.until) is None
    # Re-creating the name is a new generation (CacheOrg.Recreated): it starts clean, so the old tag stays ended.
    org.reconfigure({"staleness_seconds": 60})
    assert org.generation == 2
    feed(history, org)
    assert history.at(ORG, REPO, TAG, 10**10) is None
    assert history.before(ORG, REPO, TAG, 10**10).ended_by == "org deleted"


def test_an_org_delete_never_ends_an_interval_before_it_began(history):
    """The delete's time is its event timestamp (now); a resolution stamped by a clock ahead of it still ends
    no earlier than it began."""
    org = CacheOrg(name=ORG, settings={"upstream": "https://registry-1.docker.io"})
    tag = TagResolution(org=ORG, repository=REPO, tag=TAG, digest=D1, media_type=IMAGE, checked_at=10.0**10)
    feed(history, org, tag)
    org.delete()
    feed(history, org)
    ended = history.before(ORG, REPO, TAG, 10.0**11)
    assert (ended.since, ended.until, ended.ended_by) == (10.0**10, 10.0**10, "org deleted")


def test_replayed_positions_change_nothing(history):
    tag = TagResolution(org=ORG, repository=REPO, tag=TAG, digest=D1, media_type=IMAGE, checked_at=100.0)
    events = list(tag.collect_events())
    history.process([(events[0], Tracking("Registry", 1))])
    before = history.dump()
    with pytest.raises(Exception):
        history.process([(events[0], Tracking("Registry", 1))])
    assert history.dump() == before
