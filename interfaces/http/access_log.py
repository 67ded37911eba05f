"""One access-log line per HTTP request, written by the app itself, whichever server runs it.

uvicorn and granian log requests in different formats (granian's leaves out the query string,
which is where containerd puts `?ns=`), so `entrepot serve --access-log` turns theirs off and
wraps the app in this instead: every request, routed or not, in one format:

    127.0.0.1:51234 - "GET /v2/hub/library/alpine/manifests/3.19?ns=docker.io HTTP/1.1" 200 1638 0.004s
"""

from __future__ import annotations

import logging
import os
import time
from urllib.parse import unquote_plus

from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("entrepot.access")


def with_access_log(app: ASGIApp) -> ASGIApp:
    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan passes straight through
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status, sent = 500, 0  # if the app raises before it answers, the server sends a 500

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":  # the server sends the file: all of it
                sent += os.path.getsize(message["path"])
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            log.info('%s - "%s %s HTTP/%s" %d %d %.3fs', _client(scope), scope["method"], _target(scope),
                     scope.get("http_version", "1.1"), status, sent, time.perf_counter() - start)
    return logged


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _target(scope: Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    query = redacted(scope.get("query_string") or b"")
    target = path + (b"?" + query if query else b"")
    return target.decode("latin-1")


# Query parameters that carry credentials (tokens sent as ?token=, presigned URLs' signatures):
# the log keeps the name, never the value. Matched on the decoded, lower-cased name.
CREDENTIAL_PARAMETERS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "password", "passwd", "pwd", "secret", "client_secret",
    "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "api_key", "apikey", "key", "auth", "authorization", "code"})
_CREDENTIAL_WORDS = ("token", "password", "secret", "signature", "credential", "apikey", "api_key")
REDACTED = b"REDACTED"


def is_credential(name: str) -> bool:
    name = name.lower()
    return name in CREDENTIAL_PARAMETERS or any(word in name for word in _CREDENTIAL_WORDS)


def redacted(query: bytes) -> bytes:
    """The query string with the value of every credential-like parameter replaced, the rest verbatim."""
    if not query:
        return query
    parts = []
    for part in query.split(b"&"):
        name, equals, _ = part.partition(b"=")
        if equals and is_credential(unquote_plus(name.decode("latin-1"))):
            part = name + b"=" + REDACTED
        parts.append(part)
    return b"&".join(parts)
