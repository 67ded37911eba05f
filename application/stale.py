"""How an upstream failure reads to the stale policy and to the client's Warning header."""

from __future__ import annotations

from application import errors
from domain.policy import UpstreamFailure


def failure_kind(error: Exception) -> UpstreamFailure:
    if isinstance(error, errors.UpstreamRateLimited):
        return UpstreamFailure.RATE_LIMITED
    if isinstance(error, errors.UpstreamUnauthorized):
        return UpstreamFailure.DENIED
    if isinstance(error, (errors.UpstreamNotFound, errors.ManifestUnknown)):
        return UpstreamFailure.NOT_FOUND
    if isinstance(error, errors.UpstreamBadContent):
        return UpstreamFailure.BAD_CONTENT
    return UpstreamFailure.UNAVAILABLE


def stale_reason(error: Exception) -> str:
    """One line naming the upstream problem and its status, for the Warning header and the audit log."""
    status = getattr(error, "status", None)
    message = getattr(error, "message", None) or str(error)
    kind = failure_kind(error).value
    return f"upstream {kind}{f' ({status})' if status else ''}: {message}; serving the cached copy"
