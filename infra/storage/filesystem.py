"""Content-addressed blob storage on the local filesystem, published atomically by rename."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio.to_thread

from application.ports import BlobNotFound, BlobStorageUnavailable
from domain.names import Digest
from infra.storage.free_space import FreeSpaceFloor
from infra.storage.spool import FileSpool, remove_leftovers, translated

CHUNK = 4 * 1024 * 1024  # one thread hop per 4 MiB: the hop, not the read, was the cost at 1 MiB


class FilesystemBlobStore:
    """Layout: <root>/blobs/sha256/ab/abcdef… ; fills spool in <root>/spool on the same filesystem.

    A blob appears under its digest only by os.replace of a fully written, fsynced and verified
    spool file, so a partial or unverified blob is never visible, also after a crash.
    """

    def __init__(self, root: str, floor: FreeSpaceFloor | None = None) -> None:
        self.root = os.path.abspath(root)
        self.floor = floor or FreeSpaceFloor()
        self.blobs_dir = os.path.join(self.root, "blobs")
        self.spool_dir = os.path.join(self.root, "spool")
        os.makedirs(self.blobs_dir, exist_ok=True)
        os.makedirs(self.spool_dir, exist_ok=True)

    def clean_spool(self, older_than: float = 0.0) -> int:
        """Remove spool files left by a killed process; call at start, before any fill begins."""
        return remove_leftovers(self.spool_dir, older_than)

    def _path(self, digest: str) -> str:
        parsed = Digest.parse(digest)  # never build a path from unvalidated input
        return os.path.join(self.blobs_dir, parsed.algorithm, parsed.encoded[:2], parsed.encoded)

    async def stat(self, digest: str) -> int | None:
        try:
            return os.stat(self._path(digest)).st_size
        except FileNotFoundError:
            return None

    def local_path(self, digest: str) -> str | None:
        path = self._path(digest)
        return path if os.path.exists(path) else None

    async def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            fd = os.open(self._path(digest), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        except OSError as error:
            raise BlobStorageUnavailable(f"cannot read {digest}: {error}") from None
        try:
            end = os.fstat(fd).st_size if end is None else end
            offset = start
            while offset < end:
                chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK, end - offset), offset)
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def get_bytes(self, digest: str) -> bytes:
        try:
            with open(self._path(digest), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        except OSError as error:
            raise BlobStorageUnavailable(f"cannot read {digest}: {error}") from None

    async def put_bytes(self, digest: str, data: bytes) -> None:
        spool = self.new_spool(digest)
        published = False
        try:
            spool.write(data)
            await self.publish(digest, spool)
            published = True
        finally:
            if not published:
                spool.remove()  # a failed write leaves no partial file taking space
            spool.close()

    async def delete(self, digest: str) -> bool:
        try:
            await anyio.to_thread.run_sync(os.unlink, self._path(digest))
        except FileNotFoundError:
            return False
        except OSError as error:
            raise BlobStorageUnavailable(f"cannot delete {digest}: {error}") from None
        return True

    def new_spool(self, digest: str) -> FileSpool:
        return FileSpool(self.spool_dir)

    async def redirect_url(self, digest: str) -> str | None:
        return None  # a local file has no URL of its own: the HTTP edge sends it

    async def check(self) -> str:
        """"ok", or "low" below the free-space watermark; raises BlobStorageFull below the floor and
        BlobStorageUnavailable when blobs cannot be written here (readiness)."""
        for directory in (self.blobs_dir, self.spool_dir):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise BlobStorageUnavailable(f"{directory} is not writable")
        return await self.floor.judge(self.root)

    async def room(self) -> int:
        """Bytes fills may still write here before free space falls below low_free_bytes."""
        return await self.floor.room(self.root)

    async def publish(self, digest: str, spool: FileSpool) -> None:
        dest = self._path(digest)
        if not spool.flushed:
            await anyio.to_thread.run_sync(spool.finish)
        translated(f"storing {digest}", os.makedirs, os.path.dirname(dest), 0o777, True)
        translated(f"storing {digest}", os.replace, spool.path, dest)
