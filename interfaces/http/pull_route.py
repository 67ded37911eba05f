"""Manifest and blob pulls answered straight from the app's ASGI call, past Litestar's router and its
per-request machinery.

A warm pull by tag cost the event loop ~140 µs, and the pull's own work (route, org, tag, the audited
Pull, metrics, headers) was under 60 % of it: the rest was Litestar finding the route, its exception
middleware (twice), the handler's kwargs model, dependency resolution and exit stack — generic work
that answers the same way for every pull. These two kinds of request are the hot path, so the app
answers them itself with the same code the route runs (`oci.pull`), the same error answers
(`errors.error_response`) and the same request metrics (`metrics.http_metrics`). Everything else —
`/v2/`, the token endpoint, tag lists, referrers, writes refused, the admin API — goes through
Litestar's routing as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request
from litestar.types import Message, Receive, Scope, Send
from litestar.utils import normalize_path

from interfaces.http.errors import error_response
from interfaces.http.metrics import http_metrics
from interfaces.http.oci import OciServices, pull

try:
    # Litestar's own check of the Host header (private, pinned with Litestar 2.25): a host it would refuse
    # must get its answer, so such a request goes through the router.
    from litestar._asgi.utils import is_valid_host
except ImportError:   # a Litestar without it: every request with a Host header is routed, as before the pull route
    logging.getLogger(__name__).warning("litestar._asgi.utils.is_valid_host is gone: warm pulls take the router")

    def is_valid_host(host: bytes) -> bool:
        return False

# What Litestar would route to the `/v2/{rest:path}` handler as a manifest or blob: no normalisation of
# such a path leads to `/v2/` or `/v2/token`. The name grammar is checked later, on the raw path, as there.
_PULL_PATH = re.compile(r"^/v2/.+/(?:manifests|blobs)/[^/]+/?$")


def is_direct(scope: Scope) -> bool:
    """A GET or HEAD of a manifest or blob, with nothing Litestar's router would refuse first (a host
    header it rejects, a root path it strips)."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope.get("root_path"):
        return False
    if not _PULL_PATH.match(scope["path"]):
        return False
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    return host is None or is_valid_host(host)


class DirectPulls:
    """The pull route as an ASGI callable; `services` gives the OciServices once the container has started."""

    def __init__(self, services: Callable[[], OciServices]) -> None:
        self._services = services
        self._resolved: OciServices | None = None
        self._counted = http_metrics(self._answer)   # counted like every routed request

    async def __call__(self, app: Litestar, scope: Scope, receive: Receive, send: Send) -> None:
        # What Litestar's own entry and router leave in the scope for the handler and the middleware.
        scope["app"] = scope["litestar_app"] = app
        scope.setdefault("state", {})
        scope["path"] = normalize_path(scope["path"])
        await self._counted(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await pull(request, self._oci_services(), scope["path"][len("/v2"):])
            await response.to_asgi_response(None, request)(scope, receive, send_started)
        except Exception as error:
            if started:   # as Litestar does: a body that fails midway cannot become an error answer
                raise
            await error_response(request, error).to_asgi_response(None, request)(scope, receive, send)

    def _oci_services(self) -> OciServices:
        if self._resolved is None:
            self._resolved = self._services()
        return self._resolved


class EntrepotApp(Litestar):
    """Litestar, with manifest and blob pulls answered by DirectPulls (set as `direct_pulls` once built)."""

    direct_pulls: DirectPulls | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.direct_pulls is not None and is_direct(scope):
            await self.direct_pulls(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)
