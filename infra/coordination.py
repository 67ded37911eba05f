"""Coordination of replicas through Redis: cluster-wide blob fill locks and a shared hot cache of tag lookups.

Redis is an accelerator, never a dependency: every Redis failure degrades to in-process behaviour
(the fill lock is granted, the tag cache misses), is logged once, and shows in /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError

from application.ports import FillLock, TagRow
from infra.settings import RedisSettings

log = logging.getLogger(__name__)

_FAILED = object()


class _LocalLock:
    """Granted when no coordination is possible: this replica fetches on its own."""

    async def release(self) -> None:
        pass


class InProcessCoordination:
    """No `[redis] url`: one replica, so single-flight in the process is all there is to do."""

    state = "not configured"

    async def claim(self, digest: str) -> FillLock:
        return _LocalLock()

    async def wait_released(self, digest: str) -> bool:
        return True

    async def get(self, org: str, repository: str, tag: str) -> TagRow | None:
        return None

    async def put(self, org: str, repository: str, tag: str, row: TagRow) -> None:
        pass

    async def forget(self, org: str, repository: str, tag: str) -> None:
        pass

    async def check(self) -> str:
        return self.state

    async def aclose(self) -> None:
        pass


class RedisCoordination:
    """FillCoordinator and SharedTags on one Redis. After a failure Redis is left alone for
    `retry_after` seconds, so an outage costs one failed call per interval, not one per request."""

    def __init__(self, url: str, *, key_prefix: str = "entrepot:", fill_wait_seconds: float = 60.0,
                 lock_ttl_seconds: float = 10.0, tag_ttl_seconds: float = 5.0, retry_after: float = 2.0,
                 timeout: float = 1.0) -> None:
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                             retry=Retry(NoBackoff(), 1))  # one retry: a pooled socket may be stale
        self.prefix = key_prefix
        self.fill_wait_seconds = fill_wait_seconds
        self.lock_ttl_seconds = lock_ttl_seconds
        self.tag_ttl_ms = int(tag_ttl_seconds * 1000)
        self.retry_after = retry_after
        self._down_until = 0.0
        self.state = "ok"

    async def _call(self, operation, *args, **kwargs):
        """The command's result, or _FAILED when Redis is unavailable (now or recently).
        A LockError (a lock no longer ours) is Redis answering, not failing: it is raised."""
        if time.monotonic() < self._down_until:
            return _FAILED
        try:
            result = await operation(*args, **kwargs)
        except LockError:
            raise
        except (RedisError, OSError) as error:
            self._down_until = time.monotonic() + self.retry_after
            if self.state != "unavailable":
                self.state = "unavailable"
                log.warning("redis unavailable, coordinating in-process only until it is back: %s", error)
            return _FAILED
        if self.state != "ok":
            self.state = "ok"
            log.warning("redis is back: coordinating replicas again")
        return result

    async def check(self) -> str:
        """Ping now (readiness), whatever the last failure: 'ok' or 'unavailable'."""
        self._down_until = 0.0
        await self._call(self.redis.ping)
        return self.state

    # -- FillCoordinator ----------------------------------------------------------------------
    def _lock_key(self, digest: str) -> str:
        return f"{self.prefix}fill:{digest}"

    async def claim(self, digest: str) -> FillLock | None:
        # redis-py's Lock: a random token per holder, compare-and-act renew and release in Lua,
        # so a holder whose lock expired never touches its successor's.
        lock = Lock(self.redis, self._lock_key(digest), timeout=self.lock_ttl_seconds, blocking=False,
                    thread_local=False)
        taken = await self._call(lock.acquire, blocking=False)
        if taken is _FAILED:
            return _LocalLock()
        if not taken:
            return None
        return _RedisFillLock(self, lock)

    async def wait_released(self, digest: str) -> bool:
        """Polls the lock: it goes when the holder releases it, or expires when the holder dies."""
        key = self._lock_key(digest)
        deadline = time.monotonic() + self.fill_wait_seconds
        interval = 0.02
        while time.monotonic() < deadline:
            held = await self._call(self.redis.exists, key)
            if held is _FAILED or not held:
                return True  # with Redis gone, claim() grants the lock: the caller fetches itself
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            interval = min(interval * 1.5, 0.25)
        return False

    # -- SharedTags ---------------------------------------------------------------------------
    def _tag_key(self, org: str, repository: str, tag: str) -> str:
        return f"{self.prefix}tag:{org}/{repository}:{tag}"

    async def get(self, org: str, repository: str, tag: str) -> TagRow | None:
        raw = await self._call(self.redis.get, self._tag_key(org, repository, tag))
        if raw is _FAILED or raw is None:
            return None
        value = json.loads(raw)
        return TagRow(value["digest"], value["media_type"], float(value["checked_at"]))

    async def put(self, org: str, repository: str, tag: str, row: TagRow) -> None:
        value = json.dumps({"digest": row.digest, "media_type": row.media_type, "checked_at": row.checked_at})
        await self._call(self.redis.set, self._tag_key(org, repository, tag), value, px=self.tag_ttl_ms)

    async def forget(self, org: str, repository: str, tag: str) -> None:
        await self._call(self.redis.delete, self._tag_key(org, repository, tag))

    async def aclose(self) -> None:
        await self.redis.aclose()


class _RedisFillLock:
    """A fill lock with a short TTL, renewed while the fill runs: a dead holder frees it within the TTL."""

    def __init__(self, owner: RedisCoordination, lock: Lock) -> None:
        self._owner, self._lock = owner, lock
        self._renewing = asyncio.create_task(self._keep_alive(), name=f"renew {lock.name}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._owner.lock_ttl_seconds / 3)
            try:
                await self._owner._call(self._lock.reacquire)
            except LockError:  # expired (Redis was away): another replica may be fetching too; harmless
                log.warning("lost the fill lock %s; another replica may fetch the same blob", self._lock.name)
                return

    async def release(self) -> None:
        self._renewing.cancel()
        try:
            await self._owner._call(self._lock.release)
        except LockError:
            pass  # expired meanwhile, and perhaps taken by another replica: theirs now


def build_coordination(settings: RedisSettings) -> InProcessCoordination | RedisCoordination:
    if not settings.url:
        return InProcessCoordination()
    return RedisCoordination(settings.url, key_prefix=settings.key_prefix,
                             fill_wait_seconds=settings.fill_wait_seconds,
                             tag_ttl_seconds=settings.tag_cache_seconds)
