"""The admin API's guards: who is calling (the global admin token, or an org admin's credentials) and what they may touch.

- `admin_guard` (the whole /api/v1 router): `Authorization: Bearer <admin token>` (settings,
  $ENTREPOT_ADMIN_TOKEN, or data_dir/admin.token), or `Basic <org>+<name>:<token>` of an org admin.
  The principal is kept in the request state; `actor` hands it to handlers.
- `global_admin_guard`: only the global admin (create and delete orgs, list them, the pull audit).
- `org_admin_guard`: the global admin, or an admin of the org the `{name}` path parameter names.
  Reusable on any `/api/v1/organizations/{name}/...` route (robots today; flush and pins later).
"""

from __future__ import annotations

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from application.authentication import Authenticator
from domain.access import Principal, Role
from interfaces.http.client_auth import basic_credentials

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="entrepot-admin"'}


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    authenticator: Authenticator = connection.app.state.authenticator
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    principal = None
    if scheme.lower() == "bearer":
        principal = authenticator.admin(credentials.strip())   # compared by hash: the time says nothing
    elif scheme.lower() == "basic" and (pair := basic_credentials(credentials)) is not None:
        principal = await authenticator.basic(*pair)
        if principal is not None and principal.role not in (Role.ADMIN, Role.ORG_ADMIN):
            raise PermissionDeniedException(f"{principal.actor} is a robot: it may pull, not administer")
    if principal is None:
        raise NotAuthorizedException("a valid admin token is required: Authorization: Bearer <token>, or Basic "
                                     "with an org admin's <org>+<name> and token", headers=CHALLENGE)
    connection.state.principal = principal


def global_admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    principal: Principal = connection.state.principal
    if principal.role is not Role.ADMIN:
        raise PermissionDeniedException(f"{principal.actor} administers organization {principal.org} only; "
                                        "this needs the global admin token")


def org_admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    principal: Principal = connection.state.principal
    org = connection.path_params.get("name")
    if principal.role is Role.ADMIN or (principal.role is Role.ORG_ADMIN and principal.org == org):
        return
    raise PermissionDeniedException(f"{principal.actor} administers organization {principal.org} only")


def caller(request: Request) -> Principal:
    """The admin guard's principal, for handlers (Litestar dependency `principal`)."""
    return request.state.principal
