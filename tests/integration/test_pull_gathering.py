"""What the retention and blobs views gather of pulls in a bulk rebuild (View.gather): each image's (digest's)
pulls, their count, the latest pull time when pulls come out of time order (a backlog written back after an
outage), and for retention only the pulls of the org's latest generation with their LFU weights in log order."""

from __future__ import annotations

from array import array

import pytest
from eventsourcing.persistence import Tracking

from domain.pull import Pull
from domain.retention import pull_weight
from infra.projection_runtime import open_view

pytestmark = pytest.mark.integration

T0 = 1_764_460_800


def pulls() -> list:
    """Pulls of two orgs, two generations of one, repeated keys out of time order, errors without a digest."""
    events = []
    for n in range(60):
        org = ("hub", "quay")[n % 2]
        result = ("hit", "miss", "stale", "error", "denied", "revalidated")[n % 6]
        digest = "" if result == "error" else f"sha256:{n % 5}"
        events.append(Pull.recorded(org, f"library/r{n % 4}", f"t{n % 3}", digest, result, f"10.0.0.{n % 7}",
                                    f"agent/{n % 2}", T0 + (n * 7919) % 3000,
                                    actor="anonymous", generation=1 + (n >= 40 and org == "hub")))
    return events


def out_of_time_order(events: list) -> bool:
    """Whether some digest's last pull is not its latest (so a gathering that kept the last `at` is caught)."""
    last: dict = {}
    for event in events:
        if event.digest:
            last[(event.org, event.repository, event.digest)] = event.at
    return any(at < max(e.at for e in events if (e.org, e.repository, e.digest) == key) for key, at in last.items())


def gathered(env_factory, name: str, events: list):
    view = open_view(name, env_factory("main"))
    try:
        gathering = view.gathering()
        tracked = [(event, Tracking("Pulls", n + 1)) for n, event in enumerate(events)]
        for event, tracking in tracked:
            view.gather(gathering, event, tracking)
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
            row = expected.setdefault(key, [0, event.at, array("d"), generation])   # the weights as C doubles
            row[0], row[1] = row[0] + 1, max(row[1], event.at)
            row[2].append(pull_weight(event.at))
    assert any(row[3] == 2 for row in expected.values()) and len(expected) > 10 and out_of_time_order(events)
    assert gathered(env_factory, "retention", events).pulls == expected


def test_blobs_gathers_each_digests_pulls_and_the_latest_of_them(env_factory):
    events = pulls()
    expected: dict = {}
    for event in events:
        if event.digest:
            row = expected.setdefault((event.org, event.repository, event.digest), [0, event.at])
            row[0], row[1] = row[0] + 1, max(row[1], event.at)
    assert out_of_time_order(events)
    assert gathered(env_factory, "blobs", events).pulls == expected
