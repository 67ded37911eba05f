"""Upstream back-off: after repeated failures an upstream is treated as unavailable for a while.

A decorator over the Upstream port, so the cache never waits a full timeout again while an
upstream is known to be down, and recovers by itself: after the back-off one request is let
through; its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.errors import UpstreamRateLimited, UpstreamUnavailable
from application.ports import (Clock, Upstream, UpstreamBlob, UpstreamManifest, UpstreamManifestHead,
                               UpstreamTarget)


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0
    reason: str = ""
    rate_limited: bool = False
    retry_after: int | None = None


class GuardedUpstream:
    def __init__(self, upstream: Upstream, clock: Clock, failures: int = 3, backoff_seconds: float = 15.0,
                 default_retry_after: int = 10) -> None:
        self._upstream = upstream
        self._clock = clock
        self._threshold = failures
        self._backoff = backoff_seconds
        self._default_retry_after = default_retry_after
        self._states: dict[str, _State] = {}

    def state(self, base_url: str) -> dict:
        """For health and admin views: is this upstream in back-off, until when, and why."""
        state = self._states.get(base_url, _State())
        return {"failures": state.failures, "open_until": state.open_until if self._is_open(state) else None,
                "reason": state.reason}

    def _is_open(self, state: _State) -> bool:
        return state.open_until > self._clock.now()

    def _guard(self, target: UpstreamTarget) -> _State:
        state = self._states.setdefault(target.base_url, _State())
        if self._is_open(state):
            remaining = max(1, round(state.open_until - self._clock.now()))
            if state.rate_limited:
                raise UpstreamRateLimited(f"{target.base_url} answered 429; not asked again for {remaining}s",
                                          retry_after=remaining)
            raise UpstreamUnavailable(f"{target.base_url} is treated as unavailable for {remaining}s more after "
                                      f"{state.failures} failures (last: {state.reason})")
        return state

    def _failed(self, state: _State, error: Exception) -> None:
        if isinstance(error, UpstreamRateLimited):
            # Asking again before Retry-After only spends more of the limit.
            wait = error.retry_after if error.retry_after is not None else self._default_retry_after
            state.open_until, state.rate_limited, state.reason = self._clock.now() + wait, True, "429"
            return
        state.failures += 1
        state.rate_limited = False
        state.reason = getattr(error, "message", str(error))
        if state.failures >= self._threshold:
            state.open_until = self._clock.now() + self._backoff

    @staticmethod
    def _succeeded(state: _State) -> None:
        state.failures, state.open_until, state.rate_limited = 0, 0.0, False

    async def _call(self, target: UpstreamTarget, call):
        state = self._guard(target)
        try:
            result = await call()
        except (UpstreamUnavailable, UpstreamRateLimited) as error:
            self._failed(state, error)
            raise
        self._succeeded(state)
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

    async def aclose(self) -> None:
        await self._upstream.aclose()
