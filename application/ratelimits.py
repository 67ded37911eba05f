"""The latest upstream rate-limit reading per org (Docker Hub's `ratelimit-remaining`), kept in memory."""

from __future__ import annotations

from dataclasses import dataclass

from application.errors import UpstreamRateLimited
from application.ports import RateLimit


@dataclass(frozen=True)
class RateLimitReading:
    limit: int | None
    remaining: int | None
    window_seconds: int | None
    observed_at: float


class RateLimits:
    def __init__(self) -> None:
        self._latest: dict[str, RateLimitReading] = {}

    def observe(self, org: str, reading: RateLimit | None, at: float) -> None:
        if reading is not None and (reading.limit is not None or reading.remaining is not None):
            self._latest[org] = RateLimitReading(reading.limit, reading.remaining, reading.window_seconds, at)

    def latest(self, org: str) -> RateLimitReading | None:
        return self._latest.get(org)

    def all(self) -> dict[str, RateLimitReading]:
        return dict(self._latest)

    def at_floor(self, org: str, floor: int) -> bool:
        """True when spending another counted pull would go below the org's floor."""
        reading = self._latest.get(org)
        return floor > 0 and reading is not None and reading.remaining is not None and reading.remaining <= floor

    def check_floor(self, org: str, floor: int) -> None:
        """Raises UpstreamRateLimited when a counted pull would spend below the org's floor."""
        if self.at_floor(org, floor):
            reading = self._latest[org]
            raise UpstreamRateLimited(f"upstream pulls remaining ({reading.remaining}) reached the org's floor "
                                      f"({floor}); the moved tag is not fetched")
