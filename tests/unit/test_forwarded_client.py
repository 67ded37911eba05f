"""X-Forwarded-For names the client only on connections from a trusted proxy, and only as an IP address."""

from __future__ import annotations

import asyncio

from interfaces.http.forwarded import forwarded_client, with_forwarded_client

TRUSTED = frozenset({"127.0.0.1"})


def scope(peer: str, *forwarded: bytes) -> dict:
    return {"type": "http", "client": (peer, 5555), "headers": [(b"x-forwarded-for", value) for value in forwarded]}


def test_a_trusted_proxy_names_the_client_with_the_last_entry_it_added():
    assert forwarded_client(scope("127.0.0.1", b"198.51.100.1, 203.0.113.9"), TRUSTED) == "203.0.113.9"
    assert forwarded_client(scope("127.0.0.1", b"198.51.100.1", b"2001:db8::1"), TRUSTED) == "2001:db8::1"


def test_anyone_else_or_a_value_that_is_no_address_keeps_the_connections_own():
    assert forwarded_client(scope("192.0.2.50", b"203.0.113.9"), TRUSTED) is None
    assert forwarded_client(scope("127.0.0.1"), TRUSTED) is None
    assert forwarded_client(scope("127.0.0.1", b"<script>"), TRUSTED) is None


def test_the_wrapped_app_sees_the_forwarded_client_and_no_proxies_means_no_wrapper():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"])
    asyncio.run(with_forwarded_client(app, ["127.0.0.1"])(scope("127.0.0.1", b"203.0.113.9"), None, None))
    assert seen == [("203.0.113.9", 0)]
    assert with_forwarded_client(app, []) is app
