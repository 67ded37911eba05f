"""History (application): input checks and the not-cached answer, over fakes of the views."""

from __future__ import annotations

import pytest

from application.admin import InvalidRequest
from application.audit import AuditLog
from application.errors import OrgUnknown
from application.history import History, TagNotCachedThen
from projections.history import TagInterval

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class FakeTags:
    def __init__(self, *intervals: TagInterval) -> None:
        self.intervals = list(intervals)

    def before(self, org, repository, tag, at):
        found = [i for i in self.intervals if i.since <= at]
        return found[-1] if found else None

    def at(self, org, repository, tag, at):
        i = self.before(org, repository, tag, at)
        return i if i is not None and (i.until is None or at < i.until) else None

    def after(self, org, repository, tag, at):
        return next((i for i in self.intervals if i.since > at), None)

    def previous(self, interval):
        index = self.intervals.index(interval)
        return self.intervals[index - 1] if index else None

    def of_digest(self, digest, org=None, limit=1000):
        return [i for i in self.intervals if i.digest == digest][:limit]


class FakeAudit:
    def __init__(self) -> None:
        self.asked: list[dict] = []

    def query(self, **filters):
        self.asked.append(filters)
        return []


def interval(since, until, digest, opened_by="resolved", ended_by=None) -> TagInterval:
    return TagInterval("hub", "library/app", "latest", int(since), since, until, digest, "m", opened_by, ended_by)


@pytest.fixture
def audit():
    return FakeAudit()


@pytest.fixture
def history(audit):
    tags = FakeTags(interval(100.0, 200.0, D1, ended_by="retargeted"), interval(200.0, 300.0, D2, "retargeted", "flush"))
    return History(tags, AuditLog(audit), lambda org: org == "hub")


def test_an_instant_inside_an_interval_gets_it_with_its_neighbours(history):
    answer = history.tag_at("hub", "library/app", "latest", 250.0).as_dict()
    assert (answer["digest"], answer["since"], answer["until"]) == (D2, 200.0, 300.0)
    assert answer["previous"]["digest"] == D1 and answer["next"] is None


def test_an_instant_after_a_drop_is_not_cached_and_says_what_came_before(history):
    with pytest.raises(TagNotCachedThen) as raised:
        history.tag_at("hub", "library/app", "latest", 350.0)
    assert raised.value.around["previous"]["ended_by"] == "flush" and raised.value.around["next"] is None


@pytest.mark.parametrize("org, repository, tag, error, field", [
    ("nope", "library/app", "latest", OrgUnknown, None),
    ("hub", "Library/App", "latest", InvalidRequest, "repository"),
    ("hub", "library/app", "-bad", InvalidRequest, "tag"),
])
def test_bad_tag_questions_are_refused_before_any_read(history, org, repository, tag, error, field):
    with pytest.raises(error) as raised:
        history.tag_at(org, repository, tag, 150.0)
    if field:
        assert field in raised.value.fields


def test_the_pulls_of_a_digest_are_the_audits_rows_with_that_digest(history, audit):
    history.digest_pulls(D1, since=1.0, until=2.0, org="hub", limit=10)
    assert audit.asked[0]["digest"] == D1 and audit.asked[0]["org"] == "hub" and audit.asked[0]["limit"] == 11
    with pytest.raises(InvalidRequest):
        history.digest_pulls("sha256:short", None, None)
    with pytest.raises(OrgUnknown):
        history.digest_pulls(D1, None, None, org="nope")
    assert [r["digest"] for r in history.resolutions(D2)] == [D2]
