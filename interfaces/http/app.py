"""The Litestar application factory: routes, the OCI error table, and the container's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from interfaces.http.errors import error_response
from interfaces.http.oci import api_version, oci


def create_app(container) -> Litestar:
    """`container` (interfaces.bootstrap.Container) owns every long-lived object and its start/stop."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await container.start()
        app.state.cache = container.cache
        try:
            yield
        finally:
            await container.stop()

    return Litestar(
        route_handlers=[api_version, oci],
        lifespan=[lifespan],
        exception_handlers={Exception: error_response},
        debug=False,
    )
