"""A robot granted "every repository cached now" gets what was cached a moment ago, not only what the tags
view had read by then: the expansion waits for the view first (a view lags its log by up to GATHER)."""

from __future__ import annotations

from application.access import Access
from application.access_admin import AccessAdmin
from tests.support.clock import ManualClock


class LaggingTags:
    """The tags view: shows the image pulled a moment ago only once it has caught up."""

    def __init__(self) -> None:
        self.caught_up = False

    def settle(self) -> None:
        self.caught_up = True

    def org_repositories(self, org: str) -> list[str]:
        return ["library/alpine", "other/tool"] if self.caught_up else ["other/tool"]


def test_all_cached_waits_for_the_tags_view_before_expanding():
    tags = LaggingTags()
    access = Access(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    admin = AccessAdmin(access, lambda org: True, tags, ManualClock(), settled=tags.settle)
    admin.create_robot("private", "frozen", [], "admin", all_cached=True)
    assert admin.robot("private", "frozen").repositories == ["library/alpine", "other/tool"]


def test_without_all_cached_the_view_is_not_waited_for():
    tags = LaggingTags()
    access = Access(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    waited = []
    admin = AccessAdmin(access, lambda org: True, tags, ManualClock(), settled=lambda: waited.append(1))
    admin.create_robot("private", "ci", ["library/*"], "admin")
    assert waited == []
