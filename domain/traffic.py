"""The TrafficReport aggregate: one process's blob and manifest traffic for one org over a few seconds."""

from __future__ import annotations

import bisect

from eventsourcing.domain import Aggregate, event

# Upper bounds (seconds) of the fill-duration buckets; one more bucket counts the fills above the last.
# A fill of a small layer on loopback takes milliseconds, a large one over the internet minutes.
FILL_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def fill_bucket(seconds: float) -> int:
    """The index of the bucket a fill of `seconds` counts in (len(FILL_SECONDS_BUCKETS): above them all)."""
    return bisect.bisect_left(FILL_SECONDS_BUCKETS, seconds)


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a bucketed histogram, as its bucket's upper bound (an upper estimate);
    None without any count. Above the last bound it answers the last bound (a floor)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return FILL_SECONDS_BUCKETS[min(index, len(FILL_SECONDS_BUCKETS) - 1)]
    return FILL_SECONDS_BUCKETS[-1]


class TrafficReport(Aggregate):
    """A fresh id and exactly one event, like a Pull: the reports of many processes never contend.

    Blob GETs are too many to record one by one, so each process adds up what it served and
    fetched per org and records one report every few seconds (application/traffic.py).
    """

    class Recorded(Aggregate.Created):
        class_version = 2   # 2 added the org's generation

        org: str
        process: str            # which process measured it (host:pid), for tracing a replica's reports
        since: float            # the period the counts cover (time of day, seconds since the epoch)
        until: float
        bytes_served: dict      # kind ("blob", "manifest") -> bytes sent to clients
        bytes_fetched: dict     # kind -> bytes received from upstream
        blob_pulls: dict        # result ("hit", "miss") -> blob GETs answered
        fills: int              # blob fills verified and published
        fill_seconds: list      # fill durations, counted per FILL_SECONDS_BUCKETS bucket (+1 above)
        fills_failed: int
        repositories: dict      # repository -> bytes served (blobs and manifests) for the top lists
        generation: int         # which org of that name (domain.org.CacheOrg.Recreated) the traffic was for

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state.setdefault("generation", 1)   # before generations, every org was the first of its name

    @event(Recorded)
    def __init__(self, org: str, process: str, since: float, until: float, bytes_served: dict,
                 bytes_fetched: dict, blob_pulls: dict, fills: int, fill_seconds: list, fills_failed: int,
                 repositories: dict, generation: int = 1) -> None:
        self.generation = generation
        self.org, self.process, self.since, self.until = org, process, since, until
        self.bytes_served, self.bytes_fetched, self.blob_pulls = bytes_served, bytes_fetched, blob_pulls
        self.fills, self.fill_seconds, self.fills_failed = fills, fill_seconds, fills_failed
        self.repositories = repositories
