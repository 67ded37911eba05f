"""A fill's spool for S3: a local file for the readers, shipped as multipart-upload parts as it grows."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio.to_thread

from infra.storage.spool import FileSpool

if TYPE_CHECKING:
    from infra.storage.s3 import S3BlobStore

log = logging.getLogger(__name__)


class S3Spool:
    """Full parts go up one at a time in the background while the fill goes on; the local file is
    the buffer, so a slow S3 never slows the clients reading the fill. complete() ships the last
    part and completes the upload (the blob appears); discard() aborts it (nothing stays behind).
    """

    def __init__(self, store: S3BlobStore, key: str, local: FileSpool) -> None:
        self.store = store
        self.key = key
        self.local = local
        self.upload_id: str | None = None   # created with the first full part: small blobs need one PUT
        self._parts: list[dict] = []
        self._shipped = 0
        self._shipping: asyncio.Task | None = None
        self._finished = False              # completed or aborted

    @property
    def size(self) -> int:
        return self.local.size

    async def append(self, chunk: bytes) -> None:
        self.local.write(chunk)
        if self.local.size - self._shipped < self.store.part_size:
            return
        if self._shipping is not None:
            if not self._shipping.done():
                return  # the running shipper takes this part too
            self._shipping.result()  # a failed part fails the fill now, not at the end
        self._shipping = asyncio.create_task(self._ship_full_parts(), name=f"s3 parts {self.key}")

    def read_at(self, offset: int, size: int) -> bytes:
        return self.local.read_at(offset, size)

    async def _ship_full_parts(self) -> None:
        while self.local.size - self._shipped >= self.store.part_size:
            await self._ship(self.store.part_size)

    async def _ship(self, size: int) -> None:
        s3, offset = self.store, self._shipped
        if self.upload_id is None:
            created = await s3.call(s3.client.create_multipart_upload, Bucket=s3.bucket, Key=self.key)
            self.upload_id = created["UploadId"]
        number = len(self._parts) + 1
        body = await anyio.to_thread.run_sync(self.local.read_at, offset, size)
        part = await s3.call(s3.client.upload_part, Bucket=s3.bucket, Key=self.key, UploadId=self.upload_id,
                             PartNumber=number, Body=body, ContentLength=len(body))
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})
        self._shipped += size

    async def complete(self) -> None:
        """Called once the digest is verified: the object becomes visible, whole, under its key."""
        s3 = self.store
        if self._shipping is not None:
            await self._shipping
        if self.upload_id is None:
            body = await anyio.to_thread.run_sync(self.local.read_at, 0, self.local.size)
            await s3.call(s3.client.put_object, Bucket=s3.bucket, Key=self.key, Body=body, ContentLength=len(body))
        else:
            if self.local.size > self._shipped:
                await self._ship(self.local.size - self._shipped)  # the last part may be small
            await s3.call(s3.client.complete_multipart_upload, Bucket=s3.bucket, Key=self.key,
                          UploadId=self.upload_id, MultipartUpload={"Parts": self._parts})
        self._finished = True
        self.local.remove()  # readers still holding the read fd finish from it

    async def discard(self) -> None:
        """Abort the upload (idempotent); a failed abort is left to clean_spool and the bucket's lifecycle."""
        if self._shipping is not None and not self._shipping.done():
            try:
                await self._shipping
            except Exception:
                pass
        if self.upload_id is not None and not self._finished:
            self._finished = True
            s3 = self.store
            try:
                await s3.call(s3.client.abort_multipart_upload, Bucket=s3.bucket, Key=self.key,
                              UploadId=self.upload_id)
            except Exception as error:
                log.warning("could not abort the S3 upload of %s: %s", self.key, error)
        self.local.remove()

    def close(self) -> None:
        self.local.close()
