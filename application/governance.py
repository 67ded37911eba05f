"""What may be pulled: an org's allow/deny lists (refused before any upstream contact) and the server's
pull-through mode (what a miss may fetch), as decorators over the blob cache, the tag list and the upstream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from application.blobs import BlobAnswer
from application.errors import RepositoryDenied, UpstreamNotAsked
from application.orgs import OrgConfig
from application.ports import (Upstream, UpstreamBlob, UpstreamManifest, UpstreamManifestHead, UpstreamReferrers,
                               UpstreamTarget)
from domain.names import Digest

PullThroughMode = Literal["on", "allow-list", "off"]
MODES: tuple[str, ...] = ("on", "allow-list", "off")

# Set while an admin's prewarm runs: its fetches are explicit, whatever the mode. A context variable
# because the fetch happens deep in the shared fill path (and in the fill task it starts, which
# inherits the context), where no request object reaches.
_explicit: ContextVar[bool] = ContextVar("entrepot_explicit_fill", default=False)


@contextlib.contextmanager
def explicit_fill() -> Iterator[None]:
    """Within this block upstream may be asked whatever `pull_through` says (prewarm)."""
    token = _explicit.set(True)
    try:
        yield
    finally:
        _explicit.reset(token)


def check_allowed(org: OrgConfig, repository: str) -> None:
    """RepositoryDenied if the org's allow/deny lists refuse `repository`; one compiled match."""
    if (org.allow or org.deny) and (reason := org.refusal(repository)):
        raise RepositoryDenied(reason, org=org.name)


class GovernedUpstream:
    """The Upstream port, asked only as `pull_through` permits: "off" asks nothing, "allow-list" only
    for repositories the org's allow list names. A refusal is an UpstreamError like any other, so a
    cached tag is served stale (within max_stale) as when upstream is down."""

    def __init__(self, inner: Upstream, mode: PullThroughMode = "on") -> None:
        self._inner = inner
        self.mode = mode

    def _check(self, target: UpstreamTarget) -> None:
        if self.mode == "on" or _explicit.get():
            return
        if self.mode == "allow-list" and target.allow_listed:
            return
        why = ("pull-through is off" if self.mode == "off"
               else f"pull-through is allow-list and {target.repository!r} is not in the org's allow list")
        raise UpstreamNotAsked(f"{why}: upstream is not asked for {target.repository}; an admin can prewarm it")

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest:
        self._check(target)
        return await self._inner.get_manifest(target, reference, accept)

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead:
        self._check(target)
        return await self._inner.head_manifest(target, reference, accept)

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        self._check(target)
        return await self._inner.head_blob(target, digest)

    async def open_blob(self, target: UpstreamTarget, digest: str) -> UpstreamBlob:
        self._check(target)
        return await self._inner.open_blob(target, digest)

    async def list_tags(self, target: UpstreamTarget) -> list[str]:
        self._check(target)
        return await self._inner.list_tags(target)

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        self._check(target)
        return await self._inner.get_referrers(target, digest)

    async def aclose(self) -> None:
        await self._inner.aclose()


class AllowedManifests:
    """The manifest cache behind the org's allow/deny lists; the audit around it records a refusal as `denied`."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)   # held(), ... : everything but manifest() is the cache's own

    async def manifest(self, org: OrgConfig, repository: str, reference, accept: list[str], prefetch: bool = False):
        check_allowed(org, repository)
        return await self._inner.manifest(org, repository, reference, accept, prefetch)


class AllowedBlobs:
    """The blob cache behind the org's allow/deny lists (cached blobs too: a deny applies at once)."""

    def __init__(self, inner) -> None:
        self._inner = inner

    async def blob(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        check_allowed(org, repository)
        return await self._inner.blob(org, repository, digest)

    async def blob_head(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        check_allowed(org, repository)
        return await self._inner.blob_head(org, repository, digest)


class AllowedReferrers:
    """The referrers cache behind the org's allow/deny lists: a denied repository's signatures are not listed."""

    def __init__(self, inner) -> None:
        self._inner = inner

    async def referrers(self, org: OrgConfig, repository: str, subject: str):
        check_allowed(org, repository)
        return await self._inner.referrers(org, repository, subject)


class AllowedTags:
    """The tag list behind the org's allow/deny lists."""

    def __init__(self, inner) -> None:
        self._inner = inner

    async def tags(self, org: OrgConfig, repository: str) -> list[str]:
        check_allowed(org, repository)
        return await self._inner.tags(org, repository)
