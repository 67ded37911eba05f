"""GET /metrics (Prometheus text format, without auth) and the middleware that counts HTTP requests.

Not Litestar's PrometheusConfig: with group_path=True it labels every OCI request with the one
route template `/v2/{rest}` (manifests, blobs and tag lists all alike), and it registers in
prometheus_client's global registry, which several apps in one process would share. Here the
path is reduced to a route kind, and the series live in the app's own registry.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, generate_latest

# The classic text format (every Prometheus version reads it); Litestar appends "; charset=utf-8".
CONTENT_TYPE = "text/plain; version=0.0.4"

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ROUTES = (  # first match wins; the OCI name grammar is the router's business, not the label's
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(r"^/v2/.+/manifests/[^/]+$"), "manifest"),
    (re.compile(r"^/v2/.+/blobs/[^/]+$"), "blob"),
    (re.compile(r"^/v2/.+/tags/list$"), "tags"),
    (re.compile(r"^/(api|schema)(/|$)"), "admin"),
    (re.compile(r"^/(healthz|readyz)$"), "health"),
    (re.compile(r"^/metrics$"), "metrics"),
    (re.compile(r"^/ui(/|$)"), "ui"),
)


class HttpRecorder(Protocol):
    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None: ...


def route_kind(path: str) -> str:
    """A path as a label from a closed set: never the repository or digest it names."""
    return next((kind for pattern, kind in _ROUTES if pattern.match(path)), "other")


def method_label(method: str) -> str:
    return method if method in METHODS else "other"  # a client may send any token as a method


def http_metrics(app: ASGIApp) -> ASGIApp:
    """Litestar middleware: each HTTP request counted by method, route kind and status, and timed
    until its last body byte is sent (a streamed blob counts its whole transfer). Litestar runs it
    for routed requests only: a path no route matches (not under /v2) is not counted."""

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before it starts a response, the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            recorder: HttpRecorder = scope["litestar_app"].state.metrics  # set by the app's lifespan
            recorder.http_answered(method_label(scope["method"]), route_kind(scope["path"]), status,
                                   time.perf_counter() - start)
    return counted


# sync_to_thread: a scrape may query the read model (infra/read_model_metrics.py), off the event loop.
@get("/metrics", exclude_from_auth=True, sync_to_thread=True, include_in_schema=False)
def metrics(metrics_registry: NamedDependency[CollectorRegistry]) -> Response:
    return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE)
