"""How full the local filesystem under the data directory is, as the storage probe of /readyz reports it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import anyio.to_thread

from application.ports import BlobStorageFull


@dataclass(frozen=True)
class FreeSpaceFloor:
    """Below `min_free_bytes` storage is full (the replica cannot keep what it fetches); below
    `low_free_bytes` it is low (still working, worth an operator's look)."""

    min_free_bytes: int = 32 * 1024 * 1024
    low_free_bytes: int = 1024 * 1024 * 1024

    async def judge(self, path: str) -> str:
        """"ok" or "low"; raises BlobStorageFull below the floor. statvfs runs in a thread: on a hung
        network filesystem it blocks, and the event loop must not."""
        stats = await anyio.to_thread.run_sync(os.statvfs, path)
        free = stats.f_bavail * stats.f_frsize   # what an unprivileged writer gets; root's reserve is not ours
        total = stats.f_blocks * stats.f_frsize
        if free < self.min_free_bytes:
            raise BlobStorageFull(f"storage full: {_size(free)} free of {_size(total)} under {path}, "
                                  f"below min_free_bytes ({_size(self.min_free_bytes)})")
        return "low" if free < self.low_free_bytes else "ok"

    async def room(self, path: str) -> int:
        """Bytes that may still be written under `path` before its free space falls below
        low_free_bytes (negative when it already has): what a prefetch may take. statvfs in a thread."""
        stats = await anyio.to_thread.run_sync(os.statvfs, path, abandon_on_cancel=True)   # a hung mount: given up
        return stats.f_bavail * stats.f_frsize - self.low_free_bytes


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"
