"""A repository's tag list: upstream's when it answers, the tags we hold when it does not."""

from __future__ import annotations

from application.bounded_reads import BoundedReads
from application.errors import ReadModelUnavailable, UpstreamError, UpstreamNotFound
from application.orgs import OrgConfig
from application.ports import Upstream


class TagList:
    def __init__(self, upstream: Upstream, reads: BoundedReads) -> None:
        self._upstream = upstream
        self._reads = reads

    async def tags(self, org: OrgConfig, repository: str) -> list[str]:
        try:
            return sorted(await self._upstream.list_tags(org.target(repository)))
        except UpstreamNotFound:
            cached = await self._held(org, repository)
            if not cached:
                raise
            return sorted(cached)
        except UpstreamError:
            cached = await self._held(org, repository)
            if cached:
                return sorted(cached)
            raise

    async def _held(self, org: OrgConfig, repository: str) -> list[str]:
        try:
            return await self._reads.tags(org.name, repository)
        except ReadModelUnavailable:
            return []  # the client learns of upstream's failure, which is what it asked about
