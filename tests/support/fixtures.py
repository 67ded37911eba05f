"""Pytest fixtures that start real upstream registries and Entrepôt servers on loopback (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.support.components import require
from tests.support.registry import REGISTRY_BINARY, UpstreamRegistry
from tests.support.server import EntrepotServer

UPSTREAM_USER = "alice"
UPSTREAM_PASSWORD = "s3cret"


@contextmanager
def _registries(tmp_path_factory) -> Iterator[Callable[..., UpstreamRegistry]]:
    require(REGISTRY_BINARY, "htpasswd")
    started: list[UpstreamRegistry] = []

    def start(auth: tuple[str, str] | None = None) -> UpstreamRegistry:
        registry = UpstreamRegistry(tmp_path_factory.mktemp("upstream"), auth=auth)
        started.append(registry)
        return registry.start()

    try:
        yield start
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def upstream_registry_factory(tmp_path_factory) -> Iterator[Callable[..., UpstreamRegistry]]:
    """Call it to start more registries, e.g. `factory(auth=("bob", "pw"))`; all stop at teardown."""
    with _registries(tmp_path_factory) as start:
        yield start


@pytest.fixture(scope="module")
def module_upstream_registry_factory(tmp_path_factory) -> Iterator[Callable[..., UpstreamRegistry]]:
    """As upstream_registry_factory, but the registries live until the end of the test module."""
    with _registries(tmp_path_factory) as start:
        yield start


@pytest.fixture
def upstream_registry(upstream_registry_factory) -> UpstreamRegistry:
    """A running registry without auth, empty, on a free loopback port."""
    return upstream_registry_factory()


@pytest.fixture
def upstream_registry_with_auth(upstream_registry_factory) -> UpstreamRegistry:
    """A running registry with htpasswd Basic auth for alice / s3cret (see `.auth`)."""
    return upstream_registry_factory(auth=(UPSTREAM_USER, UPSTREAM_PASSWORD))


@contextmanager
def _servers(tmp_path_factory) -> Iterator[Callable[..., EntrepotServer]]:
    started: list[EntrepotServer] = []

    def start(organizations: list[dict], **options) -> EntrepotServer:
        server = EntrepotServer(tmp_path_factory.mktemp("entrepot"), organizations, **options)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def entrepot_server_factory(tmp_path_factory) -> Iterator[Callable[..., EntrepotServer]]:
    """Call it with a list of organization dicts (name, upstream, namespace, staleness_seconds, max_stale_seconds,
    username, password) to start a real `entrepot serve` on a free port with its own data dir; all stop at teardown.
    """
    with _servers(tmp_path_factory) as start:
        yield start


@pytest.fixture(scope="module")
def module_entrepot_server_factory(tmp_path_factory) -> Iterator[Callable[..., EntrepotServer]]:
    """As entrepot_server_factory, but the servers live until the end of the test module."""
    with _servers(tmp_path_factory) as start:
        yield start
