"""Pull outcomes counted where they are decided: decorators over the manifest and blob caches.

With GroupCommit (manifest_pulled, once durable), BlobFills (fills) and MeteredUpstream (upstream
requests), every count of the Metrics port is made in the application; the HTTP edge counts only
the bytes it hands to the server (bytes_served), which only it can see (path-send, a client leaving).
"""

from __future__ import annotations

from application.blobs import BlobAnswer, BlobCache
from application.manifests import ManifestAnswer
from application.orgs import OrgConfig
from application.ports import Metrics
from application.pull_audit import Client, PullAudit
from domain.names import Digest, Reference
from domain.pull import PullResult


class CountedManifests:
    def __init__(self, manifests: PullAudit, metrics: Metrics) -> None:
        self._manifests = manifests
        self._metrics = metrics

    async def manifest(self, org: OrgConfig, repository: str, reference: Reference, accept: list[str],
                       client: Client | None = None, record: bool = True) -> ManifestAnswer:
        answer = await self._manifests.manifest(org, repository, reference, accept, client, record=record)
        if answer.result is PullResult.STALE:
            self._metrics.stale_served(org.name)
        return answer

    async def denied(self, org: str, repository: str, reference: str, client: Client | None, reason: str,
                     status: int, error_code: str) -> None:
        """A pull access control refused: audited (result `denied`) like any other."""
        await self._manifests.denied(org, repository, reference, client, reason, status, error_code)


class CountedBlobs:
    def __init__(self, blobs: BlobCache, metrics: Metrics) -> None:
        self._blobs = blobs
        self._metrics = metrics

    async def blob(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        answer = await self._blobs.blob(org, repository, digest)
        self._metrics.blob_pulled(org.name, answer.result.value)
        return answer

    async def blob_head(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        return await self._blobs.blob_head(org, repository, digest)  # a HEAD is not a pull
