"""Prewarm: an admin brings images in explicitly (whatever `pull_through` says), through the usual fill path.

Each reference is pulled as a client would: the manifest by tag (recorded in the pull audit with the
user agent `entrepot prewarm`), the platform manifests of an index, then every blob, each fill
verified and recorded as events like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.admin import InvalidRequest
from application.governance import explicit_fill
from application.oci_errors import INTERNAL_ERROR, oci_answer
from application.pull_audit import Client
from application.pull_through import PullThrough
from domain.manifest import InvalidManifest, read_manifest
from domain.names import Digest, InvalidName, InvalidReference, parse_reference, repository_name

MAX_REFERENCES = 100
PREWARM_CLIENT = Client(address="", user_agent="entrepot prewarm")
# Every manifest type we can cache: upstream picks the richest one (an index for multi-arch images).
ACCEPT = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
          "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]


class InvalidPrewarm(InvalidRequest):
    """A reference that is not `repository:tag` or `repository@digest` (the admin API's 422 names `references`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, {"references": message})


@dataclass(frozen=True)
class Prewarmed:
    """What one reference brought in (or, with `error`, why it could not)."""

    reference: str
    digest: str = ""
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    error: str = ""
    code: str = ""


def split_reference(text: str) -> tuple[str, str]:
    """`library/alpine:3.20` -> ("library/alpine", "3.20"); `x@sha256:...` -> ("x", "sha256:...")."""
    repository, at, digest = text.partition("@")
    if not at:
        repository, colon, tag = text.rpartition(":")
        if not colon or "/" in tag:
            raise InvalidPrewarm(f"{text[:300]!r}: give REPOSITORY:TAG or REPOSITORY@DIGEST")
        reference = tag
    else:
        reference = digest
    try:
        repository_name(repository)
        parse_reference(reference)
    except (InvalidName, InvalidReference) as error:
        raise InvalidPrewarm(f"{text[:300]!r}: {error}") from None
    return repository, reference


class Prewarm:
    def __init__(self, cache: PullThrough) -> None:
        self._cache = cache

    @staticmethod
    def check(references: list[str]) -> list[tuple[str, str]]:
        """Every reference parsed, before anything is fetched; InvalidPrewarm for the first bad one."""
        if not references:
            raise InvalidPrewarm("give at least one REPOSITORY:TAG")
        if len(references) > MAX_REFERENCES:
            raise InvalidPrewarm(f"at most {MAX_REFERENCES} references per request")
        return [split_reference(reference) for reference in references]

    async def prewarm(self, org_name: str, references: list[str]) -> list[Prewarmed]:
        parsed = self.check(references)
        org = await self._cache.org(org_name)
        results = []
        for text, (repository, reference) in zip(references, parsed):
            try:
                with explicit_fill():
                    results.append(await self._one(org, text, repository, reference))
            except Exception as error:   # one failed reference does not stop the others
                answer = oci_answer(error) or INTERNAL_ERROR
                results.append(Prewarmed(text, error=answer.message, code=answer.code))
        return results

    async def _one(self, org, text: str, repository: str, reference: str) -> Prewarmed:
        top = await self._cache.manifests.manifest(org, repository, parse_reference(reference), ACCEPT,
                                                   PREWARM_CLIENT)
        manifests, blobs, size = 1, 0, 0
        pending = [top]
        while pending:
            answer = pending.pop()
            try:
                content = read_manifest(answer.content, answer.media_type)
            except InvalidManifest:
                continue
            for child in content.children:
                pending.append(await self._cache.manifests.manifest(org, repository, parse_reference(child), ACCEPT,
                                                                    PREWARM_CLIENT))
                manifests += 1
            for digest in content.blobs:
                size += await self._blob(org, repository, digest)
                blobs += 1
        return Prewarmed(text, top.digest, manifests, blobs, size)

    async def _blob(self, org, repository: str, digest: str) -> int:
        """Reads the blob through (a cold one is filled, verified and recorded); its size."""
        answer = await self._cache.blobs.blob(org, repository, Digest.parse(digest))
        size = 0
        body = answer.open(0, answer.size)
        try:
            async for chunk in body:
                size += len(chunk)
        finally:
            await body.aclose()
        return size
