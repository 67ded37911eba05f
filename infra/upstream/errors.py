"""Mapping transport failures and upstream HTTP statuses to the application's Upstream* errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from application.errors import (
    UpstreamBadContent,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from infra.upstream import headers


@contextmanager
def transport_errors(host: str) -> Iterator[None]:
    """Turn any httpx exception into an Upstream* error naming the host and the problem."""
    try:
        yield
    except httpx.HTTPError as error:
        raise _transport_error(error, _host(error, host)) from error
    except httpx.InvalidURL as error:
        # The org's upstream URL (or a redirect) is malformed: no request can be sent, so it is
        # the upstream's problem (502), never a 500 for the client.
        raise UpstreamError(f"upstream {host} cannot be asked: invalid URL ({error})", upstream=host) from error
    except httpx.StreamError as error:
        raise UpstreamUnavailable(f"upstream {host} failed: {error}", upstream=host) from error
    except (ValueError, TypeError, UnicodeError, OSError) as error:
        # Anything else that goes wrong building or sending the request (an IDNA label httpx
        # cannot encode, a socket error it did not wrap) is an upstream failure too.
        if isinstance(error, UpstreamError):
            raise
        raise UpstreamError(f"upstream {host} cannot be asked: {type(error).__name__}: {str(error)[:200]}",
                            upstream=host) from error


def _host(error: httpx.HTTPError, default: str) -> str:
    # The failing request may be a token request, or a redirect to a host other than the target's.
    try:
        return error.request.url.netloc.decode() or default
    except RuntimeError:
        return default


def _transport_error(error: httpx.HTTPError, host: str) -> UpstreamError:
    if isinstance(error, (httpx.TooManyRedirects, httpx.DecodingError)):
        return UpstreamBadContent(f"upstream {host}: {error}", upstream=host)
    if isinstance(error, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream {host} timed out ({type(error).__name__})", upstream=host)
    if isinstance(error, httpx.ConnectError):
        return UpstreamUnreachable(f"cannot connect to upstream {host}: {error}", upstream=host)
    return UpstreamUnavailable(f"upstream {host} failed: {str(error) or type(error).__name__}", upstream=host)


def error_for(response: httpx.Response, what: str, body: bytes) -> UpstreamError:
    """The error for a non-2xx answer (after authentication), with the OCI error code when there is one."""
    status = response.status_code
    host = response.request.url.netloc.decode()
    code = headers.oci_error_code(body)
    message = f"upstream {host} answered {status}{' ' + code if code else ''} for {what}"
    if status == 404:
        return UpstreamNotFound(message, status=status, upstream=host)
    if status in (401, 403):
        return UpstreamUnauthorized(message, status=status, upstream=host)
    if status == 429:
        return UpstreamRateLimited(message, retry_after=headers.retry_after(response.headers),
                                   rate_limit=headers.rate_limit(response.headers), upstream=host)
    if status >= 500:
        return UpstreamUnavailable(message, status=status, upstream=host)
    return UpstreamBadContent(message, status=status, upstream=host)
