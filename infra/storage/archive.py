"""Where archive segments live: next to the blobs, under `archive/`, on the filesystem or in the S3 bucket.

Segments are not blobs: no org holds them, so the OCI API never serves them and the evictor never
deletes them (it deletes only blobs it tracked).
"""

from __future__ import annotations

import os
import tempfile
import time

from botocore.exceptions import BotoCoreError, ClientError

from application.archive import SegmentMissing
from infra.settings import Settings
from infra.storage.s3 import s3_client


# A temporary segment file older than this was left by a process killed mid-write: no writer takes this long.
LEFTOVER_SECONDS = 3600.0


class FilesystemSegments:
    """<data_dir>/storage/archive/<name>: written under a temporary name, fsynced, then renamed.

    A kill between the write and the rename leaves a `.tmp-*` file; the next put in that directory removes
    those older than LEFTOVER_SECONDS (younger ones may be another replica's write in progress)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, name: str) -> str:
        path = os.path.abspath(os.path.join(self.root, name))
        if not path.startswith(self.root + os.sep):
            raise ValueError(f"segment name {name!r} leaves the archive")
        return path

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._remove_leftovers(os.path.dirname(path))
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)   # the rename itself survives a power loss
        finally:
            os.close(dir_fd)

    @staticmethod
    def _remove_leftovers(directory: str, now: float | None = None) -> list[str]:
        cutoff = (time.time() if now is None else now) - LEFTOVER_SECONDS
        removed = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".tmp-") and entry.is_file(follow_symlinks=False):
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed.append(entry.name)
                    except FileNotFoundError:
                        pass   # another replica removed it first
        return removed

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise SegmentMissing(f"archive segment {name} is missing from {self.root}") from None


class S3Segments:
    """<prefix>archive/<name> in the bucket: a PUT is atomic, so no temporary name is needed."""

    def __init__(self, client, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}archive/{name}", Body=data)

    def get(self, name: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}archive/{name}")["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise SegmentMissing(f"archive segment {name} is missing from s3://{self.bucket}") from None
            raise
        except BotoCoreError:
            raise


def build_segment_store(settings: Settings) -> FilesystemSegments | S3Segments:
    storage = settings.storage
    if storage.backend == "s3":
        return S3Segments(s3_client(storage.endpoint_url, storage.region), storage.bucket, storage.prefix)
    return FilesystemSegments(os.path.join(os.path.abspath(settings.data_dir), "storage", "archive"))
