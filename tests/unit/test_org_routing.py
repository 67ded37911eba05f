"""Which org a /v2/<name>/... request goes to: a named org, containerd's ?ns=, or the default org."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from application.credentials import Credentials
from application.errors import OrgUnknown, ReadModelUnavailable
from application.orgs import OrgDirectory
from application.cache_records import CacheRecords
from application.routing import OrgRouter, Route, registry_host, upstream_host
from domain.names import InvalidName

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@dataclass
class Row:
    name: str
    settings: dict


class Listing:
    """The orgs view as the router reads it; `reads` counts the queries."""

    def __init__(self, **orgs: dict) -> None:
        self.rows = [Row(name, {"namespace": "", "default": False, **settings}) for name, settings in orgs.items()]
        self.reads = 0

    def list_orgs(self) -> list[Row]:
        self.reads += 1
        return list(self.rows)


class SyncRouter:
    """The router as these tests call it: one route() at a time, outside any event loop."""

    def __init__(self, router: OrgRouter) -> None:
        self.router = router

    def route(self, name: str, ns: str | None = None) -> Route:
        return asyncio.run(self.router.route(name, ns))

    def forget(self) -> None:
        self.router.forget()


def lookup_in(names) -> Callable[[str], Awaitable[str | None]]:
    async def lookup(name: str) -> str | None:
        return name if name in names else None
    return lookup


def router(**orgs: dict) -> SyncRouter:
    listing = Listing(**orgs)
    return SyncRouter(OrgRouter(lookup_in(orgs), listing))


HUB = {"upstream": "https://registry-1.docker.io"}
QUAY = {"upstream": "https://quay.io"}
LOCAL = {"upstream": "http://127.0.0.1:5001"}


def test_a_first_path_component_naming_an_org_wins_over_ns_and_the_default():
    routes = router(hub={**HUB, "default": True}, local=LOCAL)

    assert routes.route("local/library/alpine", ns="docker.io") == Route("local", "library/alpine")
    assert routes.route("hub/library/alpine") == Route("hub", "library/alpine")


def test_ns_routes_to_the_org_whose_upstream_is_that_host_and_is_echoed():
    routes = router(hub=HUB, quay=QUAY, local=LOCAL)

    assert routes.route("library/alpine", ns="docker.io") == Route("hub", "library/alpine", "docker.io")
    assert routes.route("coreos/etcd", ns="quay.io") == Route("quay", "coreos/etcd", "quay.io")
    assert routes.route("e2e/app", ns="127.0.0.1:5001") == Route("local", "e2e/app", "127.0.0.1:5001")


def test_every_docker_hub_alias_in_ns_means_the_docker_hub_org():
    routes = router(hub={"upstream": "docker.io"})
    for ns in ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        assert routes.route("library/alpine", ns=ns).org == "hub"


def test_ns_prefers_the_org_bound_to_the_longest_matching_namespace():
    routes = router(hub=HUB, lib={**HUB, "namespace": "library"})

    assert routes.route("library/alpine", ns="docker.io") == Route("lib", "alpine", "docker.io")
    assert routes.route("bitnami/redis", ns="docker.io") == Route("hub", "bitnami/redis", "docker.io")


def test_an_ns_no_org_mirrors_is_unknown_even_when_a_default_org_exists():
    routes = router(hub={**HUB, "default": True})

    with pytest.raises(OrgUnknown, match="quay.io"):
        routes.route("coreos/etcd", ns="quay.io")
    with pytest.raises(InvalidName):  # not a records host at all: a 400, not an unknown org
        routes.route("coreos/etcd", ns="not a host/")


def test_root_paths_go_to_the_default_org_as_the_docker_daemon_sends_them():
    routes = router(hub={**HUB, "default": True}, quay=QUAY)

    assert routes.route("library/postgres") == Route("hub", "library/postgres")
    assert routes.route("alpine") == Route("hub", "alpine")


def test_root_paths_without_a_default_org_are_unknown():
    with pytest.raises(OrgUnknown, match="no default organization"):
        router(hub=HUB).route("library/postgres")


def test_an_org_name_without_a_repository_is_an_invalid_name():
    with pytest.raises(InvalidName):
        router(hub={**HUB, "default": True}).route("hub")


def test_the_org_list_is_read_once_per_ttl_but_again_after_forget():
    listing = Listing(hub={**HUB, "default": True})
    routes = SyncRouter(OrgRouter(lookup_in(("hub",)), listing, ttl=60))  # library is no org; hub is
    for _ in range(3):
        routes.route("library/alpine")
    assert listing.reads == 1

    routes.forget()
    routes.route("library/alpine")
    assert listing.reads == 2


def test_upstream_hosts_compare_without_scheme_or_default_port():
    assert upstream_host("https://quay.io:443") == upstream_host("quay.io") == "quay.io"
    assert upstream_host("http://127.0.0.1:5001") == upstream_host("127.0.0.1:5001")
    assert upstream_host("index.docker.io") == "registry-1.docker.io"


def test_a_one_word_name_through_a_docker_hub_org_means_library():
    orgs = OrgDirectory(CacheRecords(env=POPO), Credentials(env=POPO), ttl=0)
    orgs.apply("hub", {"upstream": "docker.io"})
    routes = SyncRouter(OrgRouter(orgs.lookup, Listing()))

    route = routes.route("hub/postgres")

    assert route == Route("hub", "postgres")
    assert orgs.get("hub").target(route.repository).repository == "library/postgres"
    assert orgs.get("hub").target("bitnami/postgres").repository == "bitnami/postgres"


@pytest.mark.parametrize("ns", ["quay.io#x", "quay.io\r\nX-Injected: 1", "quay.io\x00", "quay.io/x", "https://quay.io",
                                "a b", "quay.io:99999999", "-quay.io", "x" * 300, "quay.io:"])
def test_an_ns_that_is_not_a_registry_host_is_an_invalid_name_even_on_an_org_path(ns):
    routes = router(hub={**HUB, "default": True}, quay=QUAY)
    for name in ("coreos/etcd", "hub/library/alpine"):
        with pytest.raises(InvalidName, match="ns parameter"):
            routes.route(name, ns=ns)


@pytest.mark.parametrize("ns", ["quay.io", "localhost:5000", "127.0.0.1:5001", "[::1]:5000", "Quay.IO"])
def test_registry_hosts_are_accepted_as_ns(ns):
    assert registry_host(ns) == ns


def test_a_name_longer_than_255_characters_is_invalid_before_any_org_is_looked_up():
    asked = []

    async def lookup(name: str) -> str:
        asked.append(name)
        return name
    routes = SyncRouter(OrgRouter(lookup, Listing(hub=HUB)))
    with pytest.raises(InvalidName):
        routes.route("hub/" + "a" * 252)
    assert asked == []
    assert routes.route("hub/team/" + "a" * 246) == Route("hub", "team/" + "a" * 246)


def test_a_name_that_is_too_long_once_the_org_namespace_is_prefixed_is_invalid():
    routes = router(lib={**HUB, "namespace": "library/" + "n" * 100})
    assert routes.route("lib/" + "a" * 100).repository == "a" * 100
    with pytest.raises(InvalidName, match="upstream"):  # Docker Hub's library/ counts too
        router(hub=HUB).route("hub/" + "a" * 250)
    with pytest.raises(InvalidName, match="upstream"):
        routes.route("lib/" + "a" * 150)


@dataclass(frozen=True)
class Org:
    upstream: str
    namespace: str


class FailingListing(Listing):
    """The orgs view of a database that went away after the first read."""

    def __init__(self, **orgs: dict) -> None:
        super().__init__(**orgs)
        self.down = False

    def list_orgs(self) -> list[Row]:
        if self.down:
            raise ConnectionError("database unavailable")
        return super().list_orgs()


def test_root_paths_route_by_the_last_org_list_read_while_the_orgs_view_is_unavailable():
    listing = FailingListing(hub={**HUB, "default": True})
    routes = SyncRouter(OrgRouter(lookup_in(("hub",)), listing, ttl=0))
    assert routes.route("library/alpine") == Route("hub", "library/alpine")
    listing.down = True
    assert routes.route("library/alpine") == Route("hub", "library/alpine")
    assert routes.route("library/alpine", ns="docker.io") == Route("hub", "library/alpine", "docker.io")


def test_routing_without_any_org_list_read_is_unavailable_not_a_crash():
    listing = FailingListing(hub={**HUB, "default": True})
    listing.down = True

    async def lookup(name: str) -> Org | None:  # the looked-up settings, as OrgDirectory answers them
        return Org(HUB["upstream"], "") if name == "hub" else None
    routes = SyncRouter(OrgRouter(lookup, listing))
    with pytest.raises(ReadModelUnavailable):
        routes.route("library/alpine")
    assert routes.route("hub/library/alpine") == Route("hub", "library/alpine")  # a named org needs no list
