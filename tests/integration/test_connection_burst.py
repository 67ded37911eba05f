"""A thousand clients connecting at once to a real `entrepot serve` are queued and served, none reset.

A load test, bounded: 1000 connections on 127.0.0.1 only, every step under a timeout, ~1-5 s in all.
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.load]
CLIENTS = 1000


async def burst(port: int, clients: int) -> dict[str, int]:
    """Open every connection first (all held at once), then send GET /v2/ on each: outcome -> count."""
    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def connect():
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 15)
        except (OSError, TimeoutError) as error:
            count(f"connect: {type(error).__name__}")
            return None

    async def ask(connection) -> None:
        if connection is None:
            return
        reader, writer = connection
        try:
            writer.write(b"GET /v2/ HTTP/1.1\r\nHost: entrepot\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 15)
            count(answer.split(b" ", 2)[1].decode() if answer else "closed without an answer")
        except (OSError, TimeoutError) as error:
            count(type(error).__name__)
        finally:
            writer.close()

    connections = await asyncio.gather(*(connect() for _ in range(clients)))
    await asyncio.gather(*(ask(connection) for connection in connections))
    return outcomes


@pytest.mark.parametrize("engine", ["granian", "uvicorn"])
def test_a_thousand_simultaneous_connections_are_queued_and_served_not_reset(entrepot_server_factory, engine):
    server = entrepot_server_factory([], server={"engine": engine})
    outcomes = asyncio.run(asyncio.wait_for(burst(server.port, CLIENTS), 40))
    assert outcomes == {"200": CLIENTS}
