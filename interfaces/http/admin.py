"""The admin API under /api/v1: Bearer-token guarded, JSON errors of its own, described by /schema/openapi.json."""

from __future__ import annotations

from litestar import Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from interfaces.http.admin_analytics import ANALYTICS_HANDLERS
from interfaces.http.admin_audit import audit
from interfaces.http.admin_bodies import MAX_BODY
from interfaces.http.admin_errors import admin_error_response
from interfaces.http.admin_history import history_digest, history_tag
from interfaces.http.admin_orgs import OrganizationsController
from interfaces.http.admin_retention import RetentionController, evictions
from interfaces.http.admin_robots import RobotsController, admin_log
from interfaces.http.admin_seals import list_seals, seal_now
from interfaces.http.admin_what_if import simulate
from interfaces.http.auth import admin_guard

ADMIN_PREFIX = "/api/"


def admin_router() -> Router:
    # Each route says who besides the global admin may call it (interfaces/http/auth.py).
    return Router("/api/v1", route_handlers=[OrganizationsController, RobotsController, RetentionController, audit,
                                             seal_now, list_seals, admin_log, evictions, history_tag, history_digest, simulate,
                                             *ANALYTICS_HANDLERS],
                  guards=[admin_guard],
                  exception_handlers={Exception: admin_error_response}, security=[{"adminToken": []}],
                  request_max_body_size=MAX_BODY)


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Entrepôt admin API", version="1", path="/schema",
        description="Manage cache organizations, their robots and org admins, and query the pull audit and "
                    "admin logs and the cache-efficiency analytics. Every call needs `Authorization: Bearer <admin "
                    "token>`, or an org admin's `Basic <org>+<name>:<token>` for that org's routes. The OCI pull API "
                    "under /v2 is not described here.",
        components=Components(security_schemes={"adminToken": SecurityScheme(type="http", scheme="bearer")}),
    )
