"""Blob storage backends, chosen by name in settings; all raise application.ports.BlobNotFound."""

from __future__ import annotations

import os

from infra.settings import Settings, SettingsError
from infra.storage.filesystem import FilesystemBlobStore
from infra.storage.free_space import FreeSpaceFloor
from infra.storage.s3 import S3BlobStore


def build_blob_store(settings: Settings) -> FilesystemBlobStore | S3BlobStore:
    """The backend `[storage] backend` names. Both keep their spool (fills in progress) under data_dir."""
    root = os.path.join(os.path.abspath(settings.data_dir), "storage")
    storage = settings.storage
    floor = FreeSpaceFloor(storage.min_free_bytes, storage.low_free_bytes)
    if storage.backend == "filesystem":
        return FilesystemBlobStore(root, floor)
    if storage.backend == "s3":
        return S3BlobStore(bucket=storage.bucket, endpoint_url=storage.endpoint_url, region=storage.region,
                           prefix=storage.prefix, redirect=storage.redirect, spool_dir=os.path.join(root, "spool"),
                           floor=floor)
    raise SettingsError(f"[storage] backend must be 'filesystem' or 's3', got {storage.backend!r}")


__all__ = ["FilesystemBlobStore", "S3BlobStore", "build_blob_store"]
