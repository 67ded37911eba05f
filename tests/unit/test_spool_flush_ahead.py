"""A spool flushes its bytes ahead in the background while a fill writes; none of that leaks an fd,
holds more than two flushes at once, or changes the bytes published."""

from __future__ import annotations

import asyncio
import os
import time

from infra.storage import spool as spool_module
from infra.storage.spool import SYNC_AHEAD, FileSpool


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled() -> None:
    deadline = time.monotonic() + 10
    while spool_module._SYNC_SLOTS._value != 2:   # every background flush has ended
        assert time.monotonic() < deadline, "a background flush did not end"
        time.sleep(0.01)


def test_flushes_ahead_leave_no_fd_behind_and_the_bytes_intact(tmp_path):
    before = open_fds()
    data = os.urandom(3 * SYNC_AHEAD + 12345)

    async def fill() -> list[FileSpool]:
        spools = [FileSpool(str(tmp_path)) for _ in range(4)]   # more spools than flush slots
        for offset in range(0, len(data), 64 * 1024):
            for spool in spools:
                await spool.append(data[offset:offset + 64 * 1024])
        return spools
    spools = asyncio.run(fill())
    settled()
    for spool in spools:
        spool.finish()
        assert spool.read_at(0, len(data)) == data
        spool.remove()
        spool.close()

    assert open_fds() == before
