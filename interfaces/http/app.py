"""The Litestar application factory: OCI and admin routes, their error tables, and the container's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response

from interfaces.http.admin import ADMIN_PREFIX, admin_router, openapi_config
from interfaces.http.admin_errors import admin_error_response
from interfaces.http.errors import error_response
from interfaces.http.health import healthz, readyz
from interfaces.http.metrics import http_metrics, metrics
from interfaces.http.oci import api_version, oci


def any_error(request: Request, error: Exception) -> Response:
    """Errors no route claimed (unknown paths, wrong methods): JSON for the admin API, OCI elsewhere."""
    if request.url.path.startswith(ADMIN_PREFIX):
        return admin_error_response(request, error)
    return error_response(request, error)


def create_app(container) -> Litestar:
    """`container` (interfaces.bootstrap.Container) owns every long-lived object and its start/stop."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await container.start()
        app.state.cache = container.cache
        app.state.container = container  # /readyz probes its components
        app.state.router = container.router
        app.state.admin = container.admin
        app.state.audit_log = container.audit_log
        app.state.admin_token = container.admin_token
        app.state.metrics = container.metrics
        app.state.metrics_registry = container.metrics_registry
        try:
            yield
        finally:
            await container.stop()

    return Litestar(
        route_handlers=[api_version, oci, admin_router(), healthz, readyz, metrics],
        lifespan=[lifespan],
        middleware=[http_metrics],
        exception_handlers={Exception: any_error},
        openapi_config=openapi_config(),
        # `entrepot serve` configures logging (one format for every logger); Litestar's default
        # config would replace the root handlers with its own format at start.
        logging_config=None,
        debug=False,
    )
