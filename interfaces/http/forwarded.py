"""The client's own address behind a reverse proxy we trust (nginx in front, infra/deploy/nginx).

Behind nginx every connection comes from nginx, so the audit log, the analytics' client counts and
the access log would all name nginx. nginx sets `X-Forwarded-For: $remote_addr` (overwriting what
a client sent), and for connections from an address in `[server] trusted_proxies` we take the last
entry of that header as the client; from anywhere else the header is ignored, so a client talking
to Entrepôt directly cannot pose as another address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from litestar.types import ASGIApp, Receive, Scope, Send

FORWARDED_FOR = b"x-forwarded-for"


def forwarded_client(scope: Scope, trusted: frozenset[str]) -> str | None:
    """The address a trusted proxy says it forwards for, or None to keep the connection's own."""
    peer = scope.get("client")
    if not peer or peer[0] not in trusted:
        return None
    values = [value for key, value in scope["headers"] if key.lower() == FORWARDED_FOR]
    if not values:
        return None
    last = values[-1].decode("latin-1").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:   # not an address: keep the proxy's own rather than log garbage as a client
        return None


def with_forwarded_client(app: ASGIApp, trusted_proxies: Iterable[str]) -> ASGIApp:
    trusted = frozenset(str(ipaddress.ip_address(address)) for address in trusted_proxies)
    if not trusted:
        return app

    async def forwarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (address := forwarded_client(scope, trusted)) is not None:
            scope = {**scope, "client": (address, 0)}   # type: ignore[assignment]
        await app(scope, receive, send)
    return forwarded
