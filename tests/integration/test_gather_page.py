"""A page gathered at once (View.gather_page, a loop a page in the views that gather every pull) is the page
gathered event by event (View.gather): the same sums, rows and keys, in the same order (analytics numbers
members in the order of their first pull). Retention and blobs gather a pull in one place for both (gather
calls the page's loop), so their gatherings are checked against what they must hold."""

from __future__ import annotations

import dataclasses

import pytest
from eventsourcing.persistence import Tracking

from domain.pull import Pull
from domain.retention import pull_weight
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport
from infra.projection_runtime import open_view
from projections.base import View

pytestmark = pytest.mark.integration

T0 = 1_764_460_800


def pulls() -> list:
    """Pulls of two orgs, two generations of one, repeated keys out of time order, errors without a digest."""
    events = []
    for n in range(60):
        org = ("hub", "quay")[n % 2]
        result = ("hit", "miss", "stale", "error", "denied", "revalidated")[n % 6]
        events.append(Pull.recorded(org, f"library/r{n % 4}", f"t{n % 3}", "" if result == "error" else f"sha256:{n % 5}",
                                    result, f"10.0.0.{n % 7}", f"agent/{n % 2}", T0 + (n * 7919) % 3000,
                                    actor="anonymous", generation=1 + (n >= 40 and org == "hub")))
    return events


def out_of_time_order(events: list) -> bool:
    """Whether some digest's last pull is not its latest (so a gathering that kept the last `at` is caught)."""
    last: dict = {}
    for event in events:
        if event.digest:
            last[(event.org, event.repository, event.digest)] = event.at
    return any(at < max(e.at for e in events if (e.org, e.repository, e.digest) == key) for key, at in last.items())


def traffic(at: float, org: str = "hub") -> TrafficReport.Recorded:
    report = TrafficReport(org=org, process="test:1", since=at - 5, until=at, bytes_served={"blob": 100},
                           bytes_fetched={"blob": 50}, blob_pulls={"hit": 1}, fills=1,
                           fill_seconds=[1] + [0] * len(FILL_SECONDS_BUCKETS), fills_failed=0,
                           repositories={"library/r1": 100})
    return report.collect_events()[0]


def state(value):
    """A gathering's contents, order included: dicts and Counters as lists of items."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: state(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [(key, state(item)) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return [state(item) for item in value]
    return value


@pytest.mark.parametrize("name", ["audit", "counters", "analytics"])
def test_a_page_gathered_at_once_is_the_page_gathered_event_by_event(env_factory, name):
    events = pulls()
    if name == "analytics":   # its Pulls pages hold traffic reports too, between the pulls
        events[10:10] = [traffic(T0 + 200)]
        events[45:45] = [traffic(T0 + 3 * 3600 + 10, org="quay")]
    view = open_view(name, env_factory("main"))
    try:
        pages = [[(event, Tracking("Pulls", n + 1)) for n, event in enumerate(events)][start:start + 25]
                 for start in range(0, len(events), 25)]
        at_once, one_by_one = view.gathering(), view.gathering()
        for page in pages:
            view.gather_page(at_once, page)
            View.gather_page(view, one_by_one, page)   # the default: gather, event by event
        assert type(view).gather_page is not View.gather_page
        assert state(at_once) == state(one_by_one)
        assert state(at_once) != state(view.gathering())
    finally:
        view.close()


def gathered(env_factory, name: str, events: list):
    view = open_view(name, env_factory("main"))
    try:
        gathering = view.gathering()
        tracked = [(event, Tracking("Pulls", n + 1)) for n, event in enumerate(events)]
        for start in range(0, len(tracked), 25):
            view.gather_page(gathering, tracked[start:start + 25])
        return gathering
    finally:
        view.close()


def test_retention_gathers_each_images_pulls_of_its_latest_generation_with_their_weights_in_log_order(env_factory):
    events = pulls()
    expected: dict = {}
    for event in events:
        if not event.digest or event.result == "error":
            continue
        key = (event.org, event.repository, event.digest)
        generation = max(e.generation for e in events if (e.org, e.repository, e.digest) == key)
        if event.generation == generation:
            row = expected.setdefault(key, [0, event.at, [], generation])
            row[0], row[1] = row[0] + 1, max(row[1], event.at)
            row[2].append(pull_weight(event.at))
    assert any(row[3] == 2 for row in expected.values()) and len(expected) > 10 and out_of_time_order(events)
    assert gathered(env_factory, "retention", events) == expected


def test_blobs_gathers_each_digests_pulls_and_the_latest_of_them(env_factory):
    events = pulls()
    expected: dict = {}
    for event in events:
        if event.digest:
            row = expected.setdefault((event.org, event.repository, event.digest), [0, event.at])
            row[0], row[1] = row[0] + 1, max(row[1], event.at)
    assert out_of_time_order(events)
    assert gathered(env_factory, "blobs", events).pulls == expected
