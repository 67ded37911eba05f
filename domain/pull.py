"""The Pull aggregate: one per manifest GET served, for the audit log and hit-rate metrics."""

from __future__ import annotations

import enum

from eventsourcing.domain import Aggregate, event


class PullResult(str, enum.Enum):
    HIT = "hit"                  # served from the cache with no upstream contact
    MISS = "miss"                # fetched from upstream
    STALE = "stale"              # served from the cache because upstream failed
    REVALIDATED = "revalidated"  # upstream confirmed the cached digest (HEAD)


class Pull(Aggregate):
    """A fresh id per pull and exactly one event: no version contention on the hot path."""

    class Recorded(Aggregate.Created):
        org: str
        repository: str
        reference: str
        digest: str
        result: str
        client: str
        user_agent: str
        at: float
        note: str = ""    # why a pull was served stale: the upstream problem, with its status

    @event(Recorded)
    def __init__(self, org: str, repository: str, reference: str, digest: str, result: str,
                 client: str, user_agent: str, at: float, note: str = "") -> None:
        self.org, self.repository, self.reference, self.digest = org, repository, reference, digest
        self.result, self.client, self.user_agent, self.at, self.note = result, client, user_agent, at, note
