"""UpstreamBackoff: an upstream that is failing for many repositories is treated as unavailable for a while.

A decorator over the Upstream port, so the cache never waits a full timeout again while an
upstream is known to be down. What counts is the upstream's health, not one client's requests:
the back-off opens only when, within a sliding window, enough requests failed, they were a large
enough share of the requests sent, and they failed for several distinct repositories. So one
client hammering one repository the upstream chokes on (a 500 for a name it cannot handle)
cannot put the upstream into back-off for everyone. Only failures that say the upstream is
down count (5xx, timeouts, connection errors); a 404 or any other 4xx is an answer, and counts
as a success. A 429 opens the back-off at once: asking again before Retry-After only spends more
of the limit.

It recovers by itself: after the back-off the requests go through again; the first failure
reopens it at once, a success closes it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from application.errors import UpstreamError, UpstreamRateLimited, UpstreamUnavailable
from application.ops_log import NoOpsLog, OpsLog
from application.ports import (Clock, Upstream, UpstreamBlob, UpstreamManifest, UpstreamManifestHead, UpstreamReferrers,
                               UpstreamTarget)


@dataclass(frozen=True)
class BackoffPolicy:
    """When an upstream goes into back-off, and for how long (the `[upstream]` settings)."""

    failures: int = 3               # at least this many failed requests in the window (so as many requests)
    failure_ratio: float = 0.5      # ... that are at least this share of the requests sent in it
    repositories: int = 2           # ... and failed for at least this many distinct repositories
    window_seconds: float = 30.0
    backoff_seconds: float = 15.0


@dataclass(frozen=True)
class _Outcome:
    at: float
    repository: str
    failed: bool


@dataclass
class _Upstream:
    outcomes: deque[_Outcome] = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False           # the back-off just ended: the next failure reopens it at once
    reason: str = ""
    failures: int = 0               # the failures that opened it, for the message
    rate_limited: bool = False
    detail: dict | None = None      # the failure's error detail: an answer during back-off has the same shape


class UpstreamBackoff:
    def __init__(self, upstream: Upstream, clock: Clock, policy: BackoffPolicy | None = None,
                 default_retry_after: int = 10, ops: OpsLog | None = None) -> None:
        self._upstream = upstream
        self._ops = ops or NoOpsLog()
        self._clock = clock
        self._policy = policy or BackoffPolicy()
        self._default_retry_after = default_retry_after
        self._upstreams: dict[str, _Upstream] = {}

    def _admit(self, target: UpstreamTarget) -> _Upstream:
        state = self._upstreams.setdefault(target.base_url, _Upstream())
        now = self._clock.now()
        if state.open_until > now:
            remaining = max(1, round(state.open_until - now))
            if state.rate_limited:
                raise UpstreamRateLimited(f"{target.base_url} answered 429; not asked again for {remaining}s",
                                          retry_after=remaining, **(state.detail or {}))
            raise UpstreamUnavailable(f"{target.base_url} is treated as unavailable for {remaining}s more after "
                                      f"{state.failures} failures (last: {state.reason})", **(state.detail or {}))
        if state.open_until:
            state.open_until, state.probing, state.rate_limited = 0.0, True, False
        return state

    def _record(self, state: _Upstream, repository: str, failed: bool) -> None:
        now = self._clock.now()
        outcomes = state.outcomes
        outcomes.append(_Outcome(now, repository, failed))
        while outcomes and outcomes[0].at <= now - self._policy.window_seconds:
            outcomes.popleft()

    def _should_open(self, state: _Upstream) -> bool:
        if state.probing:
            return True
        policy = self._policy
        failed = [outcome for outcome in state.outcomes if outcome.failed]
        return (len(failed) >= policy.failures
                and len(failed) >= policy.failure_ratio * len(state.outcomes)
                and len({outcome.repository for outcome in failed}) >= policy.repositories)

    def _failed(self, state: _Upstream, target: UpstreamTarget, error: UpstreamError) -> None:
        now = self._clock.now()
        self._ops.upstream_failed(target, error)
        state.detail = error.detail
        if isinstance(error, UpstreamRateLimited):
            wait = error.retry_after if error.retry_after is not None else self._default_retry_after
            state.open_until, state.rate_limited, state.reason = now + wait, True, "429"
            self._ops.backoff_opened(target, wait, "it answered 429")
            return
        self._record(state, target.repository, failed=True)
        state.reason = getattr(error, "message", str(error))
        if self._should_open(state):
            state.failures = sum(outcome.failed for outcome in state.outcomes)
            state.open_until, state.probing, state.rate_limited = now + self._policy.backoff_seconds, False, False
            state.outcomes.clear()  # after the back-off the window starts afresh
            self._ops.backoff_opened(target, self._policy.backoff_seconds,
                                     f"{state.failures} failures, last: {state.reason}")

    def _answered(self, state: _Upstream, target: UpstreamTarget) -> None:
        state.probing = False
        self._record(state, target.repository, failed=False)

    async def _call(self, target: UpstreamTarget, call):
        state = self._admit(target)
        try:
            result = await call()
        except (UpstreamUnavailable, UpstreamRateLimited) as error:
            self._failed(state, target, error)
            raise
        except UpstreamError:
            self._answered(state, target)  # a 404, 401 or other 4xx: the upstream is up and answering
            raise
        self._answered(state, target)
        return result

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest:
        return await self._call(target, lambda: self._upstream.get_manifest(target, reference, accept))

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead:
        return await self._call(target, lambda: self._upstream.head_manifest(target, reference, accept))

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        return await self._call(target, lambda: self._upstream.head_blob(target, digest))

    async def open_blob(self, target: UpstreamTarget, digest: str) -> UpstreamBlob:
        return await self._call(target, lambda: self._upstream.open_blob(target, digest))

    async def list_tags(self, target: UpstreamTarget) -> list[str]:
        return await self._call(target, lambda: self._upstream.list_tags(target))

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        return await self._call(target, lambda: self._upstream.get_referrers(target, digest))

    async def aclose(self) -> None:
        await self._upstream.aclose()
