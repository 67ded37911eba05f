"""A flush reads its scope from the retention view, which lags the event log by a moment: it lets the
view catch up first, so an image cached just before the flush is flushed too instead of escaping it.
A pin does the same, so an image pulled a moment before is found."""

from __future__ import annotations

from dataclasses import dataclass

from application.retention_admin import CacheRetention
from domain.org_settings import OrgSettings
from domain.retention import Candidate


@dataclass
class Held:
    org: str
    repository: str
    digest: str
    pinned: bool = False
    tags: tuple = ("1",)
    bytes: int = 100


class LaggingView:
    """Shows the image cached a moment ago only once the views have settled."""

    def __init__(self) -> None:
        self.caught_up = False

    def held_images(self, org, repository):
        return [Held(org, "team/app", "sha256:" + "a" * 64)] if self.caught_up else []

    def tag_digest(self, org, repository, tag):
        return "sha256:" + "a" * 64 if self.caught_up else None

    def image(self, org, repository, digest):
        return Held(org, repository, digest) if self.caught_up and digest == "sha256:" + "a" * 64 else None

    def candidate(self, image, scope):
        return Candidate(image.org, image.repository, image.digest, {image.digest: (image.bytes, 1)}, list(image.tags))


class Records:
    def __init__(self) -> None:
        self.evicted, self.flushes = [], []

    def evict_image(self, org, repository, digest, **details):
        self.evicted.append((org, repository, digest, details["actor"]))

    def record_flush(self, org, repository, tag, **details):
        self.flushes.append((org, repository, details["images"], details["actor"]))

    def set_pin(self, org, repository, digest, **details):
        self.pins = [(org, repository, digest, details["pinned"], details["actor"])]


class Clock:
    def now(self) -> float:
        return 1_000.0


def test_a_flush_lets_the_view_catch_up_before_it_reads_its_scope():
    view, records = LaggingView(), Records()
    retention = CacheRetention(records, view, lambda org: OrgSettings(upstream="https://registry.example"), Clock(),
                               settled=lambda: setattr(view, "caught_up", True))

    report = retention.flush("hub", "team/app", None, dry_run=False, actor="alice")

    assert report.images == 1
    assert records.evicted == [("hub", "team/app", "sha256:" + "a" * 64, "alice")]
    assert records.flushes == [("hub", "team/app", 1, "alice")]


def test_a_dry_run_sees_the_same_scope():
    view = LaggingView()
    retention = CacheRetention(Records(), view, lambda org: OrgSettings(upstream="https://registry.example"), Clock(),
                               settled=lambda: setattr(view, "caught_up", True))

    assert retention.flush("hub", None, None, dry_run=True, actor="alice").images == 1


def test_a_pin_lets_the_view_catch_up_before_it_looks_the_tag_up():
    view, records = LaggingView(), Records()
    retention = CacheRetention(records, view, lambda org: OrgSettings(upstream="https://registry.example"), Clock(),
                               settled=lambda: setattr(view, "caught_up", True))

    pinned = retention.pin("hub", "team/app", "1", None, pinned=True, actor="alice")

    assert pinned.digest == "sha256:" + "a" * 64
    assert records.pins == [("hub", "team/app", "sha256:" + "a" * 64, True, "alice")]
