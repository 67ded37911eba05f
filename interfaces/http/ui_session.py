"""The dashboard's login: the admin token, once, for an HTTP-only session cookie; logout; the page guard.

The session cookie is an HS256 JWT (PyJWT, as the pull tokens) with its audience, issue and expiry
times, signed with a key derived from the admin token: a new token ends every session, and no session
state is kept on the server (so it holds across replicas and restarts). Not Litestar's cookie-session middleware: its backend holds an
AESGCM object that Litestar's router registration cannot deep-copy, and app-wide it would run on every
OCI request. Logout deletes the cookie; a copied cookie stays valid until it expires (12 hours).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any
from urllib.parse import quote

import jwt
from litestar import Request, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.datastructures import Cookie
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template

SESSION_SECONDS = 12 * 3600
MAX_TOKEN = 512


class LoginRequired(NotAuthorizedException):
    """A dashboard page without a session: answered with a redirect to the login form."""


COOKIE = "entrepot_session"


AUDIENCE = "entrepot-dashboard"


def _key(admin_token: str) -> bytes:
    return hashlib.sha256(b"entrepot dashboard session\0" + admin_token.encode()).digest()


def new_session(admin_token: str, now: float) -> str:
    issued = int(now)
    return jwt.encode({"aud": AUDIENCE, "iat": issued, "exp": issued + SESSION_SECONDS, "sub": "admin"},
                      _key(admin_token), algorithm="HS256")


def valid_session(admin_token: str, value: str | None, now: float) -> bool:
    """A cookie this admin token signed, for the dashboard, not expired at `now`."""
    if not value or len(value) > 1024:
        return False
    try:
        claims = jwt.decode(value, _key(admin_token), algorithms=["HS256"], audience=AUDIENCE,
                            options={"require": ["aud", "iat", "exp"], "verify_exp": False, "verify_iat": False})
    except jwt.InvalidTokenError:
        return False
    # Issue and expiry against `now` (the caller's clock), not PyJWT's own reading of the time.
    return 0 <= now - claims["iat"] and now < claims["exp"]


def logged_in(connection: ASGIConnection) -> bool:
    return valid_session(connection.app.state.admin_token, connection.cookies.get(COOKIE), time.time())


def ui_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if not logged_in(connection):
        raise LoginRequired()


def to_login(request: Request, _: Exception) -> Redirect:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    return target if target and target.startswith("/ui/") and not target.startswith("//") else "/ui/"


@get("/login", sync_to_thread=False)
def login_form(next: FromQuery[str | None] = None) -> Template:
    return Template("login.html", context={"next": safe_next(next), "error": None})


@post("/login", sync_to_thread=False, status_code=303)
def login(request: Request,
          data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Redirect | Template:
    token = str(data.get("token", ""))[:MAX_TOKEN]
    target = safe_next(str(data.get("next", "")))
    expected = request.app.state.admin_token
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        return Template("login.html", context={"next": target, "error": "That is not the admin token."},
                        status_code=401)
    cookie = Cookie(key=COOKIE, value=new_session(expected, time.time()), path="/ui", httponly=True,
                    samesite="strict", max_age=SESSION_SECONDS)
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/logout", sync_to_thread=False, status_code=303)
def logout(request: Request) -> Redirect:
    return Redirect("/ui/login", status_code=303,
                    cookies=[Cookie(key=COOKIE, value="", path="/ui", httponly=True, samesite="strict", max_age=0)])
