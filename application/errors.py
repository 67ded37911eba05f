"""Errors the application raises; the HTTP edge maps each to an OCI error in one table."""

from __future__ import annotations

from eventsourcing.persistence import OperationalError


class EntrepotError(Exception):
    """Base class: `message` is safe to show to a client."""

    def __init__(self, message: str = "", **detail) -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.__class__.__name__
        self.detail = detail or None


class InvalidRequest(EntrepotError):
    """The request names a field whose value cannot be used; `fields` maps each to what is wrong."""

    def __init__(self, message: str, fields: dict[str, str]) -> None:
        super().__init__(message)
        self.fields = fields


class OrgUnknown(EntrepotError):
    """No cache organization of that name."""


class ManifestUnknown(EntrepotError):
    """The manifest is neither cached nor known upstream."""


class BlobUnknown(EntrepotError):
    """The blob is neither cached nor known upstream."""


class ManifestTooLarge(EntrepotError):
    """The manifest exceeds the size a registry must accept (4 MiB)."""


class RangeNotSatisfiable(EntrepotError):
    """The requested byte range lies outside the blob."""

    def __init__(self, size: int, message: str = "") -> None:
        super().__init__(message or f"range not satisfiable for a blob of {size} bytes")
        self.size = size


class EventStoreUnavailable(EntrepotError, OperationalError):
    """The event store cannot be reached or did not answer in time, or could not record what the cache did
    (the database is down or slow); an eventsourcing OperationalError too."""


class UpstreamError(EntrepotError):
    """Upstream could not answer; `status` is its HTTP status when there was one."""

    def __init__(self, message: str = "", status: int | None = None, **detail) -> None:
        super().__init__(message, **detail)
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Upstream refused the connection, timed out, or answered 5xx."""


class UpstreamTimeout(UpstreamUnavailable):
    """Upstream did not answer in time."""


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection to upstream could be made."""


class UpstreamRateLimited(UpstreamError):
    """Upstream answered 429 Too Many Requests."""

    def __init__(self, message: str = "", retry_after: int | None = None, **detail) -> None:
        super().__init__(message, status=429, **detail)
        self.retry_after = retry_after


class UpstreamUnauthorized(UpstreamError):
    """Upstream refused our credentials (401/403)."""


class UpstreamNotFound(UpstreamError):
    """Upstream answered 404 for the manifest or blob."""


class UpstreamBadContent(UpstreamError):
    """Upstream sent bytes that do not match their digest, or an unusable response."""


# The two ways a blob's bytes fail verification; told apart so metrics can count them apart.
class BlobTruncated(UpstreamBadContent):
    """Upstream ended a blob before the length it declared."""


class BlobCorrupt(UpstreamBadContent):
    """Upstream's bytes do not match the blob's digest."""


class UpstreamRefused(UpstreamError):
    """The SSRF policy refused where upstream (or its redirect, token realm or Link) would take us."""


class UpstreamNotAsked(UpstreamError):
    """`[server] pull_through` does not let this miss be fetched (off, or allow-list without the repository)."""


class RepositoryDenied(EntrepotError):
    """The org's allow/deny lists or the pull-through mode refuse this repository; nothing was asked upstream."""


class LoopDetected(EntrepotError):
    """The request came from this Entrepôt cluster itself (its hop header): an org's upstream leads back here."""


class ReadModelUnavailable(EntrepotError):
    """The read model or the event store did not answer in time (the database is down or slow)."""


class PullNotRecorded(EntrepotError):
    """The pull could not be recorded in the audit log in time (the database is down or slow)."""


class PullKept(EventStoreUnavailable):
    """The event store did not take the pull now; this process keeps it and records it once the event store takes
    writes again (a bounded backlog: application/pull_backlog.py)."""
