"""Coordination of replicas through Redis: cluster-wide blob fill locks and a shared hot cache of tag lookups.

Redis is an accelerator, never a dependency: every Redis failure degrades to in-process behaviour
(the fill lock is granted, the tag cache misses), is logged once, and shows in /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from application.ports import FillLock, TagRow
from infra.settings import RedisSettings

log = logging.getLogger(__name__)

# Compare-and-act on the lock's token, so a holder whose lock expired never touches its successor's.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
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
        self.lock_ttl_ms = int(lock_ttl_seconds * 1000)
        self.tag_ttl_ms = int(tag_ttl_seconds * 1000)
        self.retry_after = retry_after
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._down_until = 0.0
        self.state = "ok"

    async def _call(self, operation, *args, **kwargs):
        """The command's result, or _FAILED when Redis is unavailable (now or recently)."""
        if time.monotonic() < self._down_until:
            return _FAILED
        try:
            result = await operation(*args, **kwargs)
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
        key, token = self._lock_key(digest), uuid.uuid4().hex
        taken = await self._call(self.redis.set, key, token, nx=True, px=self.lock_ttl_ms)
        if taken is _FAILED:
            return _LocalLock()
        if not taken:
            return None
        return _RedisLock(self, key, token)

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


class _RedisLock:
    """A fill lock with a short TTL, renewed while the fill runs: a dead holder frees it within the TTL."""

    def __init__(self, owner: RedisCoordination, key: str, token: str) -> None:
        self._owner, self.key, self._token = owner, key, token
        self._renewing = asyncio.create_task(self._keep_alive(), name=f"renew {key}")

    async def _keep_alive(self) -> None:
        owner = self._owner
        while True:
            await asyncio.sleep(owner.lock_ttl_ms / 3000)
            kept = await owner._call(owner._renew, keys=[self.key], args=[self._token, owner.lock_ttl_ms])
            if kept == 0:  # expired (Redis was away): another replica may be fetching too; harmless
                log.warning("lost the fill lock %s; another replica may fetch the same blob", self.key)
                return

    async def release(self) -> None:
        self._renewing.cancel()
        owner = self._owner
        await owner._call(owner._release, keys=[self.key], args=[self._token])


def build_coordination(settings: RedisSettings) -> InProcessCoordination | RedisCoordination:
    if not settings.url:
        return InProcessCoordination()
    return RedisCoordination(settings.url, key_prefix=settings.key_prefix,
                             fill_wait_seconds=settings.fill_wait_seconds,
                             tag_ttl_seconds=settings.tag_cache_seconds)
