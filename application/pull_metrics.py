"""Pull outcomes counted (and the unusual ones logged) where they are decided: decorators over the caches.

With GroupCommit (manifest_pulled, once durable), BlobFills (fills) and MeteredUpstream (upstream
requests), every count of the Metrics port is made in the application; the HTTP edge counts only
the bytes it hands to the server (bytes_served), which only it can see (path-send, a client leaving).
"""

from __future__ import annotations

from application.blobs import BlobAnswer, BlobCache
from application.manifests import ManifestAnswer
from application.orgs import OrgConfig
from application.ports import Metrics
from application.ops_log import NoOpsLog, OpsLog
from application.pull_audit import Client, PullAudit, is_audited_failure
from application.referrers import ReferrersAnswer
from domain.names import Digest, Reference
from domain.pull import PullResult


class CountedManifests:
    def __init__(self, manifests: PullAudit, metrics: Metrics, ops: OpsLog | None = None) -> None:
        self._manifests = manifests
        self._metrics = metrics
        self._ops = ops or NoOpsLog()

    async def manifest(self, org: OrgConfig, repository: str, reference: Reference, accept: list[str],
                       client: Client | None = None, record: bool = True) -> ManifestAnswer:
        try:
            answer = await self._manifests.manifest(org, repository, reference, accept, client, record=record)
        except Exception as error:
            if is_audited_failure(error):   # bad input is the client's to fix, not the operator's
                self._ops.refused(org.name, repository, str(reference), error)
            raise
        if answer.result is PullResult.STALE:
            self._metrics.stale_served(org.name)
            self._ops.served_stale(org.name, repository, str(reference), answer.warning)
        return answer

    async def referrers(self, org: OrgConfig, repository: str, subject: str, client: Client | None = None,
                        record: bool = True) -> ReferrersAnswer:
        answer = await self._manifests.referrers(org, repository, subject, client, record=record)
        if answer.result is PullResult.STALE:
            self._metrics.stale_served(org.name)
            self._ops.served_stale(org.name, repository, f"referrers:{subject}", answer.warning)
        return answer

    async def denied(self, org: OrgConfig | str, repository: str, reference: str, client: Client | None, reason: str,
                     status: int, error_code: str) -> None:
        """A pull access control refused: audited (result `denied`) like any other."""
        await self._manifests.denied(org, repository, reference, client, reason, status, error_code)


class CountedBlobs:
    def __init__(self, blobs: BlobCache, metrics: Metrics, ops: OpsLog | None = None) -> None:
        self._blobs = blobs
        self._metrics = metrics
        self._ops = ops or NoOpsLog()

    async def blob(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        try:
            answer = await self._blobs.blob(org, repository, digest)
        except Exception as error:
            if is_audited_failure(error):
                self._ops.refused(org.name, repository, str(digest), error)
            raise
        self._metrics.blob_pulled(org.name, answer.result.value)
        return answer

    async def blob_head(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        return await self._blobs.blob_head(org, repository, digest)  # a HEAD is not a pull
