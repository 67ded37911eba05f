"""The Litestar application factory: OCI and admin routes, their error tables, and the container's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, Request, Response
from litestar.di import NamedDependency, Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from prometheus_client import CollectorRegistry

from application.admin import OrgAdmin
from application.access_admin import AccessAdmin
from application.analytics import Analytics
from application.audit import AuditLog
from application.history import History
from application.audit_seals import AuditSeals
from application.prewarm import Prewarm
from application.retention_admin import CacheRetention
from application.what_if import WhatIf
from interfaces.http.admin import ADMIN_PREFIX, admin_router, openapi_config
from interfaces.http.admin_errors import admin_error_response
from interfaces.http.auth import caller
from interfaces.http.errors import error_response
from interfaces.http.health import Probe, healthz, readyz
from interfaces.http.metrics import http_metrics, metrics
from interfaces.http.client_auth import ClientAccess, token
from interfaces.http.oci import OciServices, api_version, oci
from interfaces.http.pull_route import DirectPulls, EntrepotApp
from interfaces.http.ui_pages import ui_router


def any_error(request: Request, error: Exception) -> Response:
    """Errors no route claimed (unknown paths, wrong methods): JSON for the admin API, OCI elsewhere."""
    if request.url.path.startswith(ADMIN_PREFIX):
        return admin_error_response(request, error)
    return error_response(request, error)


def create_app(container, started: Callable[[], None] | None = None) -> Litestar:
    """`container` (interfaces.bootstrap.Container) owns every long-lived object and its start/stop.

    Handlers get what they use through Litestar's dependency injection, from the providers below;
    the objects exist from bootstrap() on, so each provider's answer is resolved once and kept.
    `started` is called once the container has started and the server listens.
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await container.start()
        # Read outside any handler: the admin guard and the HTTP metrics middleware.
        app.state.admin_token = container.admin_token
        app.state.authenticator = container.authenticator
        app.state.metrics = container.metrics
        if started is not None:
            # On the loop's next turn: the engine goes on to serve the socket without awaiting in between.
            asyncio.get_running_loop().call_soon(started)
        try:
            yield
        finally:
            await container.stop()

    def provide_client_access() -> ClientAccess:
        return ClientAccess(container.authenticator, container.router, container.cache.manifests)

    def provide_oci(client_access: NamedDependency[ClientAccess]) -> OciServices:
        return OciServices(cache=container.cache, router=container.router, metrics=container.metrics,
                           via=container.guard.via, access=client_access, accel=container.accel)

    def oci_services() -> OciServices:   # for the pulls answered past the router (DirectPulls)
        return provide_oci(provide_client_access())

    def provide_admin() -> OrgAdmin:
        return container.admin

    def provide_prewarm() -> Prewarm:
        return container.prewarm

    def provide_access_admin() -> AccessAdmin:
        return container.access_admin

    def provide_retention() -> CacheRetention:
        return container.retention

    def provide_what_if() -> WhatIf:
        return container.what_if

    def provide_audit_log() -> AuditLog:
        return container.audit_log

    def provide_history() -> History:
        return container.history

    def provide_audit_seals() -> AuditSeals:
        return container.audit_seals

    def provide_analytics() -> Analytics:
        return container.analytics

    def provide_metrics_registry() -> CollectorRegistry:
        return container.metrics_registry

    def provide_probes() -> list[Probe]:
        return container.probes

    def once(provider) -> Provide:
        return Provide(provider, sync_to_thread=False, use_cache=True)

    app = EntrepotApp(
        route_handlers=[api_version, token, oci, admin_router(), ui_router(), healthz, readyz, metrics],
        template_config=TemplateConfig(directory=Path(__file__).parent / "templates", engine=JinjaTemplateEngine),
        dependencies={"oci_services": once(provide_oci), "client_access": once(provide_client_access),
                      "admin": once(provide_admin), "access_admin": once(provide_access_admin),
                      "prewarm": once(provide_prewarm), "retention": once(provide_retention),
                      "what_if": once(provide_what_if),
                      "principal": Provide(caller, sync_to_thread=False),
                      "audit_log": once(provide_audit_log), "history": once(provide_history),
                      "audit_seals": once(provide_audit_seals),
                      "analytics": once(provide_analytics), "metrics_registry": once(provide_metrics_registry),
                      "probes": once(provide_probes)},
        lifespan=[lifespan],
        middleware=[http_metrics],
        exception_handlers={Exception: any_error},
        openapi_config=openapi_config(),
        # `entrepot serve` configures logging (one format for every logger); Litestar's default
        # config would replace the root handlers with its own format at start.
        logging_config=None,
        debug=False,
    )
    app.direct_pulls = DirectPulls(oci_services)
    return app
