"""The Pull aggregate: one per manifest GET, served or failed, for the audit log and hit-rate metrics."""

from __future__ import annotations

import enum

from eventsourcing.domain import Aggregate, event


class PullResult(str, enum.Enum):
    HIT = "hit"                  # served from the cache with no upstream contact
    MISS = "miss"                # fetched from upstream
    STALE = "stale"              # served from the cache because upstream failed
    REVALIDATED = "revalidated"  # upstream confirmed the cached digest (HEAD)
    ERROR = "error"              # answered with an error: nothing was served


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
        # Fields added later have defaults: an event stored before them loads with the default
        # (the mapper sets the stored state as the event's __dict__; missing names fall back to these).
        note: str = ""        # a stale serve: the upstream problem behind it; an error: the message answered
        status: int = 200     # the HTTP status answered; every pull recorded before errors were audited was a 200
        error_code: str = ""  # the OCI error code answered (MANIFEST_UNKNOWN, TOOMANYREQUESTS, ...); "" unless an error

    @event(Recorded)
    def __init__(self, org: str, repository: str, reference: str, digest: str, result: str,
                 client: str, user_agent: str, at: float, note: str = "", status: int = 200,
                 error_code: str = "") -> None:
        self.org, self.repository, self.reference, self.digest = org, repository, reference, digest
        self.result, self.client, self.user_agent, self.at, self.note = result, client, user_agent, at, note
        self.status, self.error_code = status, error_code
