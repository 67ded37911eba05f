"""The admin API's guard: a Bearer admin token (settings, $ENTREPOT_ADMIN_TOKEN, or data_dir/admin.token)."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="entrepot-admin"'}


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    expected: str = connection.app.state.admin_token
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    # compare_digest: how long the comparison takes says nothing about the token
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise NotAuthorizedException("a valid admin token is required: Authorization: Bearer <token>",
                                     headers=CHALLENGE)
