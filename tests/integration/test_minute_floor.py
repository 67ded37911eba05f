"""The analytics view keeps minute buckets for [analytics] minute_days only, on SQLite and PostgreSQL: older
pulls stay in their hour and day buckets, the live view forgets old minutes a step at a time, a rebuild
writes none, and every answer stays exact at the resolution kept."""

from __future__ import annotations

import time

import pytest
from eventsourcing.persistence import Tracking

from application.admin import InvalidRequest
from application.analytics import Analytics, iso
from application.pulls import Pulls
from domain.analytics import DAY, HOUR, MINUTE, bucket_start, minute_floor
from domain.pull import Pull
from infra.projection_runtime import open_view, projection_runners
from infra.projection_runtime.rebuild import rebuild_many
from projections.analytics import FORGET_STEP, MINUTE_TABLES
from tests.support.views import view_dumps

pytestmark = pytest.mark.integration
NOW = 1_780_000_000.0          # 2026-05-28: the views' clock in these tests (view.now)
DAYS = 14


def pulls_at(*times, org="hub"):
    events = []
    for i, at in enumerate(times):
        events += Pull(org=org, repository=f"library/app{i % 3}", reference="1", digest="sha256:x", result="hit",
                       client=f"10.0.0.{i % 7}", user_agent="skopeo", at=at).collect_events()
    return events


def tracked(events, start=1):
    return [(event, Tracking("Pulls", start + i)) for i, event in enumerate(events)]


def minute_rows(view) -> dict[str, list[int]]:
    """Each minute table's bucket starts."""
    dump = view.dump()
    return {table: sorted(row[3] for row in dump[table] if row[2] == MINUTE) for table in MINUTE_TABLES}


def opened(env_factory, days=DAYS, now=NOW):
    view = open_view("analytics", {**env_factory("main"), "ANALYTICS_MINUTE_DAYS": str(days)})
    view.now = lambda: now
    return view


@pytest.fixture
def view(env_factory):
    v = opened(env_factory)
    yield v
    v.close()


def test_older_pulls_are_kept_by_hour_and_day_and_answers_widen_to_whole_hours_there(view):
    floor = minute_floor(NOW, DAYS)
    assert floor == bucket_start(NOW - DAYS * DAY, HOUR)
    old = [NOW - 30 * DAY + 17 * MINUTE + i for i in range(0, 600, 40)]      # 15 pulls a month ago
    base = bucket_start(NOW - 30 * MINUTE, MINUTE)
    recent = [base + i * 61 for i in range(10)]                              # 10 in the last half hour, a minute each
    view.process(tracked(pulls_at(*old, *recent)))
    assert view.minute_floor() == floor
    assert all(start >= floor for starts in minute_rows(view).values() for start in starts)
    assert minute_rows(view)["analytics_pulls"] and minute_rows(view)["analytics_member_sets"]
    asked = Analytics(view, lambda: ["hub"], lambda: NOW)
    # A range starting mid-hour a month ago: widened to that hour's start, and every pull of it counted.
    summary = asked.summary("hub", old[0] + 5 * MINUTE, NOW)
    assert summary["since"] == iso(bucket_start(old[0], HOUR)) and summary["pulls_total"] == 25
    assert (summary["clients"], summary["repositories"]) == (7, 3)
    # Ending before the floor too: the hour is the finest answer there.
    assert asked.summary("hub", old[0] + 5 * MINUTE, old[0] + 6 * MINUTE)["pulls_total"] == 15
    # After the floor, minutes as always.
    assert asked.summary("hub", recent[2], base + 5 * MINUTE)["pulls_total"] == 3
    assert sum(p["value"] for p in asked.series("hub", "pulls_total", "minute", NOW - HOUR, NOW)["points"]) == 10
    with pytest.raises(InvalidRequest) as refused:
        asked.series("hub", "pulls_total", "minute", old[0], old[0] + HOUR)
    assert f"minute buckets are kept from {iso(floor)} on" in str(refused.value)
    hours = asked.series("hub", "pulls_total", "hour", old[0] - HOUR, old[0] + HOUR)["points"]
    assert [p["value"] for p in hours] == [0, 15, 0]


def test_the_live_view_forgets_old_minutes_a_step_at_a_time_and_answers_the_same_meanwhile(env_factory):
    # A view that kept every minute (an older release, or minute_days = 0) gets a window.
    view = opened(env_factory, days=0)
    history = [NOW - day * DAY + i * 300 for day in range(40, 0, -1) for i in range(4)]
    view.process(tracked(pulls_at(*history)))
    assert min(minute_rows(view)["analytics_pulls"]) < NOW - 39 * DAY
    asked = Analytics(view, lambda: ["hub"], lambda: NOW)
    before = asked.series("hub", "pulls_total", "hour", NOW - 41 * DAY, NOW)["points"]
    view.close()

    view = opened(env_factory)
    floor = minute_floor(NOW, DAYS)
    asked = Analytics(view, lambda: ["hub"], lambda: NOW)
    pages, position = 0, len(history) + 1
    while min(start for starts in minute_rows(view).values() for start in starts) < floor:
        oldest = min(start for starts in minute_rows(view).values() for start in starts)
        view.process(tracked(pulls_at(NOW - 60), start=position))
        position += 1
        pages += 1
        assert view.minute_floor() == floor
        # At most FORGET_STEP of minute rows forgotten per page, and answers as before meanwhile.
        assert min(start for starts in minute_rows(view).values() for start in starts) >= oldest
        assert all(start >= min(floor, oldest + FORGET_STEP) for starts in minute_rows(view).values()
                   for start in starts)
        now_points = asked.series("hub", "pulls_total", "hour", NOW - 41 * DAY, NOW)["points"]
        assert [p["value"] for p in now_points][:-1] == [p["value"] for p in before][:-1]
    assert pages == -(-(floor - (NOW - 40 * DAY)) // FORGET_STEP)   # (40 - 14) days, two a page
    rows = minute_rows(view)   # the minutes after the floor stay (these pulls have no traffic reports)
    assert rows["analytics_pulls"][0] >= floor and rows["analytics_member_sets"][0] >= floor
    assert len(rows["analytics_pulls"]) == 14 * 4 + 1
    view.close()


def test_a_rebuild_writes_no_minute_below_the_floor_and_answers_as_the_live_view(env_factory):
    now = time.time()
    env = {**env_factory("main"), "ANALYTICS_MINUTE_DAYS": str(DAYS)}
    pulls = Pulls(env=env)
    try:
        for day in (30, 20, 10, 1):
            pulls.write([Pull.recorded("hub", "library/app", "1", "sha256:x", "hit", f"10.0.0.{day}", "skopeo",
                                       now - day * DAY + i * 70, actor="anonymous") for i in range(5)])
    finally:
        pulls.close()
    runners = projection_runners(env).start()
    try:
        runners.wait_caught_up(timeout=20)
    finally:
        runners.stop()
    live = view_dumps(env, ("analytics",))["analytics"]
    rebuild_many(("analytics",), env, page_size=3, bulk_events=7)
    rebuilt = view_dumps(env, ("analytics",))["analytics"]
    floor = rebuilt.pop("analytics_minute_floor")[0][1]
    assert live.pop("analytics_minute_floor")[0][1] in (floor, floor - HOUR)   # unless an hour began between
    assert floor in (minute_floor(now, DAYS), minute_floor(now, DAYS) + HOUR)
    assert rebuilt == live
    minutes = sorted({row[3] for row in rebuilt["analytics_pulls"] if row[2] == MINUTE})
    assert len(minutes) == 10 and minutes[0] >= floor   # the pulls of 10 days and 1 day ago, a minute each
    assert sum(row[5] for row in rebuilt["analytics_pulls"] if row[2] == HOUR) == 20
