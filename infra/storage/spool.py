"""A local temporary file that a fill appends to while readers read it as it grows."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from application.ports import BlobStorageFull, BlobStorageUnavailable

T = TypeVar("T")
# A full filesystem, or the quota of the user we run as: no room, as opposed to a broken disk.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def storage_error(action: str, error: OSError) -> BlobStorageUnavailable:
    """An OSError as the storage error every backend raises: 'storage full' when there is no room."""
    if error.errno in _NO_ROOM:
        return BlobStorageFull(f"storage full: {action}: {error.strerror}")
    return BlobStorageUnavailable(f"storage failed: {action}: {error}")


def translated(action: str, call: Callable[..., T], *args) -> T:
    """call(*args), raising storage_error() instead of an OSError."""
    try:
        return call(*args)
    except OSError as error:
        raise storage_error(action, error) from None


class FileSpool:
    """Writes go through one fd, reads use pread on another, so readers never disturb the writer.

    The read fd stays valid after the file is renamed into place or unlinked (POSIX), so readers
    that joined a fill finish from the same bytes whatever happens to the path.
    """

    def __init__(self, directory: str) -> None:
        fd, self.path = translated("creating a spool file", tempfile.mkstemp, ".part", "fill-", directory)
        self._write_fd = fd
        try:
            self._read_fd = translated("opening a spool file", os.open, self.path, os.O_RDONLY)
        except BlobStorageUnavailable:
            self.remove()
            raise
        self.size = 0
        self.flushed = False   # every byte written is on disk and the write fd closed
        self._closed = False

    async def append(self, chunk: bytes) -> None:
        # A local write: the page cache absorbs it, so it is not worth a thread hop per chunk.
        self.write(chunk)

    def append_blocking(self, chunk: bytes) -> None:
        """append() for a fill that copies in a worker thread (application/fills.py)."""
        self.write(chunk)

    async def discard(self) -> None:
        self.remove()

    def write(self, chunk: bytes) -> None:
        """Append `chunk` whole, or raise BlobStorageFull / BlobStorageUnavailable (`size` counts only
        whole chunks, so the first `size` bytes are always good)."""
        view = memoryview(chunk)
        while view:
            written = translated("writing a spool file", os.write, self._write_fd, view)
            view = view[written:]
        self.size += len(chunk)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._read_fd, size, offset)

    def finish(self) -> None:
        """Flush the bytes to disk before the file is published under its digest (once: a fill copying
        in a worker thread flushes there, through flush_blocking, and publishing then has nothing to do)."""
        if self.flushed:
            return
        translated("flushing a spool file", os.fsync, self._write_fd)
        os.close(self._write_fd)
        self._write_fd = -1
        self.flushed = True

    def flush_blocking(self) -> None:
        """finish(), for the worker thread that wrote the last bytes: no hop back and forth for it."""
        self.finish()

    def remove(self) -> None:
        """Drop the file; readers that hold the read fd still finish from it."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Release the read fd once no reader needs it."""
        if not self._closed:
            self._closed = True
            if self._write_fd >= 0:
                os.close(self._write_fd)
                self._write_fd = -1
            os.close(self._read_fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


def remove_leftovers(spool_dir: str, older_than: float = 0.0) -> int:
    """Delete spool files older than `older_than` seconds: partial downloads of a killed process."""
    removed = 0
    cutoff = time.time() - older_than
    for name in os.listdir(spool_dir):
        path = os.path.join(spool_dir, name)
        try:
            if os.stat(path).st_mtime <= cutoff:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed
