"""Content-addressed blob storage in an S3-compatible object store (boto3, SigV4), uploaded while it is filled."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from application.ports import BlobNotFound, BlobStorageUnavailable
from domain.names import Digest
from infra.storage.free_space import FreeSpaceFloor
from infra.storage.s3_spool import S3Spool
from infra.storage.spool import FileSpool, remove_leftovers

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024       # S3's floor for every part but the last
PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024
PRESIGNED_SECONDS = 900               # checked when the client's GET starts, so a short life is enough
ABANDONED_AFTER = 24 * 3600           # no fill runs this long: an older multipart upload is a crash leftover
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


class _RangePastEnd(Exception):
    """A Range starting at or past the end of the object (416)."""


def s3_client(endpoint_url: str = "", region: str = "us-east-1"):
    """A boto3 S3 client; credentials come from the standard AWS environment."""
    config = Config(
        signature_version="s3v4",  # presigned URLs too: the default gives SigV2-style URLs (STACK-NOTES P14)
        # S3-compatible servers (MinIO, Ceph, moto) want path-style URLs; AWS works either way.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5, read_timeout=60, max_pool_connections=64,
    )
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config)


class S3BlobStore:
    """Objects at <prefix>blobs/<algorithm>/<hex>. A cold blob spools to a local file (the readers'
    source) while full parts go up as a multipart upload, completed only once the digest is
    verified: an unverified blob is never visible, since S3 shows an object only when complete.
    """

    def __init__(self, *, bucket: str, spool_dir: str, endpoint_url: str = "", region: str = "us-east-1",
                 prefix: str = "", redirect: bool = False, part_size: int = PART_SIZE,
                 abandoned_after: float = ABANDONED_AFTER, client=None, floor: FreeSpaceFloor | None = None) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix
        self.redirect = redirect
        self.part_size = part_size
        self.abandoned_after = abandoned_after
        self.spool_dir = os.path.abspath(spool_dir)
        self.floor = floor or FreeSpaceFloor()
        os.makedirs(self.spool_dir, exist_ok=True)
        self.client = client or s3_client(endpoint_url, region)

    def key(self, digest: str) -> str:
        parsed = Digest.parse(digest)  # never build a key from unvalidated input
        return f"{self.prefix}blobs/{parsed.algorithm}/{parsed.encoded}"

    async def call(self, operation: Callable[..., T], **params) -> T:
        """One boto3 call in a thread; errors become BlobNotFound or BlobStorageUnavailable."""
        try:
            return await anyio.to_thread.run_sync(lambda: operation(**params))
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING or status == 404:
                raise BlobNotFound(params.get("Key", "")) from None
            if code == "InvalidRange":
                raise _RangePastEnd() from None
            raise BlobStorageUnavailable(f"S3 {operation.__name__}: {error}") from None
        except BotoCoreError as error:
            raise BlobStorageUnavailable(f"S3 {operation.__name__}: {error}") from None

    async def stat(self, digest: str) -> int | None:
        try:
            head = await self.call(self.client.head_object, Bucket=self.bucket, Key=self.key(digest))
        except BlobNotFound:
            return None
        return int(head["ContentLength"])

    def local_path(self, digest: str) -> str | None:
        return None

    async def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        params = {"Bucket": self.bucket, "Key": self.key(digest)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self.call(self.client.get_object, **params)
        except _RangePastEnd:  # nothing to send, as on a filesystem
            return
        body = response["Body"]
        try:
            while True:
                try:
                    chunk = await anyio.to_thread.run_sync(body.read, READ_CHUNK)
                except (BotoCoreError, OSError) as error:
                    raise BlobStorageUnavailable(f"S3 read of {digest}: {error}") from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def get_bytes(self, digest: str) -> bytes:
        response = await self.call(self.client.get_object, Bucket=self.bucket, Key=self.key(digest))
        try:
            return await anyio.to_thread.run_sync(response["Body"].read)
        except (BotoCoreError, OSError) as error:
            raise BlobStorageUnavailable(f"S3 read of {digest}: {error}") from None

    async def put_bytes(self, digest: str, data: bytes) -> None:
        await self.call(self.client.put_object, Bucket=self.bucket, Key=self.key(digest), Body=data,
                        ContentLength=len(data))

    async def delete(self, digest: str) -> bool:
        # S3 answers a delete of a missing key with success, so ask first: the answer says whether it was there.
        if await self.stat(digest) is None:
            return False
        await self.call(self.client.delete_object, Bucket=self.bucket, Key=self.key(digest))
        return True

    def new_spool(self, digest: str) -> S3Spool:
        return S3Spool(self, self.key(digest), FileSpool(self.spool_dir))

    async def publish(self, digest: str, spool: S3Spool) -> None:
        if spool.key != self.key(digest):
            raise ValueError(f"spool for {spool.key} cannot be published as {digest}")
        await spool.complete()

    async def redirect_url(self, digest: str) -> str | None:
        if not self.redirect:
            return None
        params = {"Bucket": self.bucket, "Key": self.key(digest)}
        return await anyio.to_thread.run_sync(lambda: self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=PRESIGNED_SECONDS))

    async def check(self) -> str:
        """"ok" or "low" (the local spool's free space); raises BlobStorageUnavailable unless the bucket
        answers, BlobStorageFull when the spool's filesystem is below the floor (readiness)."""
        try:
            await self.call(self.client.head_bucket, Bucket=self.bucket)
        except BlobNotFound:
            raise BlobStorageUnavailable(f"bucket {self.bucket!r} does not exist") from None
        return await self.floor.judge(self.spool_dir)

    async def room(self) -> int:
        """Bytes fills may still spool before the spool's filesystem falls below low_free_bytes (a fill
        holds its whole blob in the spool until the upload completes)."""
        return await self.floor.room(self.spool_dir)

    def clean_spool(self, older_than: float = 0.0) -> int:
        """Remove what killed processes left: local spool files, and multipart uploads older than
        `abandoned_after` (younger ones may belong to a fill running on another replica)."""
        removed = remove_leftovers(self.spool_dir, older_than)
        try:
            removed += self._abort_abandoned_uploads(time.time() - max(older_than, self.abandoned_after))
        except (BotoCoreError, ClientError) as error:
            log.warning("could not list abandoned S3 uploads in %s: %s", self.bucket, error)
        return removed

    def _abort_abandoned_uploads(self, cutoff: float) -> int:
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}blobs/")
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() <= cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
        return aborted
