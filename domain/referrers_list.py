"""The referrers list an upstream gave for one subject, recorded so that it is cached like a tag."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.referrers import Descriptor, descriptor_of


class ReferrersList(Aggregate):
    """What an upstream listed as the referrers of one subject (its referrers API, or its fallback tag
    `sha256-<hex>`), and when it last said so: the list outlives a restart and is served stale by the
    tag policy when upstream fails.

    A list is recorded when it changed; an unchanged answer after the org's staleness records only
    when upstream confirmed it (like a tag's Revalidated), never once per request.
    """

    class Listed(Aggregate.Created):
        org: str
        repository: str
        subject: str
        descriptors: list    # the descriptors as an index lists them (Descriptor.as_json)
        checked_at: float

    class Changed(Aggregate.Event):
        """A different list from upstream, or the same list after a flush or org delete dropped it from the views."""
        org: str
        repository: str
        subject: str
        descriptors: list
        checked_at: float

    class Revalidated(Aggregate.Event):
        org: str
        repository: str
        subject: str
        checked_at: float

    @staticmethod
    def create_id(org: str, repository: str, subject: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:referrers:{org}/{repository}@{subject}")

    @event(Listed)
    def __init__(self, org: str, repository: str, subject: str, descriptors: list, checked_at: float) -> None:
        self.org, self.repository, self.subject = org, repository, subject
        self.descriptors, self.checked_at = list(descriptors), checked_at

    def observe(self, descriptors: list, checked_at: float, shown: bool) -> None:
        """Upstream answered with `descriptors` (as JSON). `shown`: the views still show the last list
        recorded; a flush or an org delete drops it there, and only a full list brings it back."""
        if shown and descriptors == self.descriptors:
            if checked_at > self.checked_at:
                self._revalidated(org=self.org, repository=self.repository, subject=self.subject,
                                  checked_at=checked_at)
        else:
            self._changed(org=self.org, repository=self.repository, subject=self.subject,
                          descriptors=list(descriptors), checked_at=checked_at)

    @event(Revalidated)
    def _revalidated(self, org, repository, subject, checked_at) -> None:
        self.checked_at = checked_at

    @event(Changed)
    def _changed(self, org, repository, subject, descriptors, checked_at) -> None:
        self.descriptors, self.checked_at = list(descriptors), checked_at


def as_recorded(descriptors: list[Descriptor]) -> list[dict]:
    """Descriptors as the events carry them: plain JSON, the shape an index lists them in."""
    return [descriptor.as_json() for descriptor in descriptors]


def from_recorded(entries: list) -> list[Descriptor]:
    return [descriptor_of(entry) for entry in entries]
