"""Which OCI error (code, HTTP status) answers each error: the one table the HTTP edge and the audit log share."""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.persistence import InterfaceError as PersistenceInterfaceError
from eventsourcing.persistence import OperationalError as PersistenceOperationalError

from application import errors as app
from application.ports import BlobStorageFull, BlobStorageUnavailable
from domain.names import InvalidDigest, InvalidName, InvalidReference


@dataclass(frozen=True)
class OciAnswer:
    code: str       # the OCI error code: MANIFEST_UNKNOWN, TOOMANYREQUESTS, ...
    status: int     # the HTTP status
    message: str    # what the client is told


# Most specific first: the first matching class decides.
ERROR_TABLE: list[tuple[type[Exception], str, int]] = [
    (InvalidName, "NAME_INVALID", 400),
    (InvalidDigest, "DIGEST_INVALID", 400),
    (InvalidReference, "TAG_INVALID", 400),
    (app.OrgUnknown, "NAME_UNKNOWN", 404),
    (app.RepositoryDenied, "DENIED", 403),
    (app.UpstreamNotAsked, "DENIED", 403),
    (app.LoopDetected, "UNSUPPORTED", 508),
    (app.ManifestUnknown, "MANIFEST_UNKNOWN", 404),
    (app.BlobUnknown, "BLOB_UNKNOWN", 404),
    (app.UpstreamNotFound, "NAME_UNKNOWN", 404),
    (app.RangeNotSatisfiable, "RANGE_INVALID", 416),
    (app.ManifestTooLarge, "MANIFEST_INVALID", 502),
    (app.UpstreamRateLimited, "TOOMANYREQUESTS", 429),
    (app.UpstreamUnauthorized, "DENIED", 502),
    (app.UpstreamRefused, "UNAVAILABLE", 502),
    (app.UpstreamBadContent, "DIGEST_INVALID", 502),
    (app.UpstreamUnavailable, "UNAVAILABLE", 503),
    # 507 Insufficient Storage: the operator must free space; a retry elsewhere may succeed meanwhile.
    (BlobStorageFull, "UNAVAILABLE", 507),
    (BlobStorageUnavailable, "UNAVAILABLE", 503),
    (app.EventStoreUnavailable, "UNAVAILABLE", 503),
    (app.ReadModelUnavailable, "UNAVAILABLE", 503),
    (app.PullNotRecorded, "UNAVAILABLE", 503),
    # A database failure that reached the edge untranslated (a view read): unavailable, not a bug.
    (PersistenceOperationalError, "UNAVAILABLE", 503),
    (PersistenceInterfaceError, "UNAVAILABLE", 503),
    (app.UpstreamError, "UNAVAILABLE", 502),
]

# An error the table does not know is a bug: the client learns nothing more than this.
INTERNAL_ERROR = OciAnswer("UNKNOWN", 500, "internal error")


def oci_answer(error: Exception) -> OciAnswer | None:
    """The OCI error `error` is answered with; None when the table does not know it."""
    for kind, code, status in ERROR_TABLE:
        if isinstance(error, kind):
            return OciAnswer(code, status, getattr(error, "message", None) or str(error))
    return None
