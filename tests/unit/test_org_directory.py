"""OrgDirectory: orgs come from the orgs view plus this process's own writes, through bounded caches."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import anyio
import pytest

from application.credentials import Credentials
from application.orgs import OrgDirectory
from application.cache_records import CacheRecords

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@dataclass(frozen=True)
class Row:
    name: str
    settings: dict
    deleted: bool = False


class LaggingView:
    """An orgs view that shows only what the test puts in it, and counts reads and their threads."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.reads = 0
        self.threads: set[int] = set()

    def get_org(self, name: str) -> Row | None:
        self.reads += 1
        self.threads.add(threading.get_ident())
        return self.rows.get(name)


def directory(**options) -> tuple[OrgDirectory, LaggingView, CacheRecords]:
    view, records = LaggingView(), CacheRecords(env=POPO)
    return OrgDirectory(records, Credentials(env=POPO), view, **options), view, records


def test_orgs_are_read_from_the_view_not_the_event_store():
    orgs, view, records = directory()
    view.rows["hub"] = Row("hub", {"upstream": "https://registry-1.docker.io", "staleness_seconds": 7})
    assert orgs.get("hub").staleness_seconds == 7
    assert records.recorder.max_notification_id() in (None, 0)   # nothing was ever written or needed


def test_this_process_reads_its_own_writes_while_the_view_lags():
    orgs, view, _ = directory()
    orgs.apply("hub", {"upstream": "docker.io", "staleness_seconds": 60, "password": "pw"})
    assert orgs.get("hub").staleness_seconds == 60 and orgs.get("hub").password == "pw"
    orgs.forget("hub")   # past the short cache: the view (still empty) is read, our write still wins
    assert orgs.get("hub").staleness_seconds == 60
    orgs.delete("hub")
    orgs.forget("hub")
    assert orgs.get("hub") is None


def test_once_the_view_shows_the_write_the_view_is_followed_again():
    orgs, view, _ = directory()
    orgs.apply("hub", {"upstream": "docker.io", "staleness_seconds": 60})
    view.rows["hub"] = Row("hub", {"upstream": "https://registry-1.docker.io", "staleness_seconds": 60})
    orgs.forget("hub")
    orgs.get("hub")                      # the view caught up: our own entry is dropped
    view.rows["hub"] = Row("hub", {"upstream": "https://registry-1.docker.io", "staleness_seconds": 5})
    orgs.forget("hub")                   # another replica changed it since
    assert orgs.get("hub").staleness_seconds == 5


def test_found_and_unknown_names_are_cached_and_bounded():
    orgs, view, _ = directory(size=2, unknown_size=3)
    view.rows["hub"] = Row("hub", {"upstream": "docker.io"})
    for _ in range(3):
        assert orgs.get("hub") is not None and orgs.get("nosuch") is None
    assert view.reads == 2
    for n in range(100):                 # a flood of unknown first path segments
        orgs.get(f"probe{n}")
    assert len(orgs._unknown) <= 3 and len(orgs._found) <= 2
    reads = view.reads
    orgs.get("hub")
    assert view.reads == reads           # the flood did not evict the real org


def test_deleted_orgs_in_the_view_are_unknown():
    orgs, view, _ = directory()
    view.rows["gone"] = Row("gone", {"upstream": "docker.io"}, deleted=True)
    assert orgs.get("gone") is None


def test_async_lookup_reads_the_view_in_a_thread_only_on_a_miss():
    orgs, view, _ = directory()
    view.rows["hub"] = Row("hub", {"upstream": "docker.io"})

    async def main():
        loop_thread = threading.get_ident()
        first = await orgs.lookup("hub")
        reads = view.reads
        second = await orgs.lookup("hub")
        return loop_thread, first, second, reads

    loop_thread, first, second, reads = anyio.run(main)
    assert first == second and first.name == "hub"
    assert reads == 1 and view.reads == 1
    assert loop_thread not in view.threads


@pytest.mark.parametrize("ttl", [0])
def test_a_zero_ttl_reads_the_view_every_time(ttl):
    orgs, view, _ = directory(ttl=ttl)
    view.rows["hub"] = Row("hub", {"upstream": "docker.io"})
    orgs.get("hub"), orgs.get("hub")
    assert view.reads == 2


class DownView(LaggingView):
    """An orgs view whose database can refuse connections."""

    down = False

    def get_org(self, name: str) -> Row | None:
        if self.down:
            raise ConnectionRefusedError("connection refused (the database is down)")
        return super().get_org(name)


def test_an_org_read_before_the_view_went_down_is_served_from_what_it_said_last():
    view, records = DownView(), CacheRecords(env=POPO)
    orgs = OrgDirectory(records, Credentials(env=POPO), view)
    view.rows["hub"] = Row("hub", {"upstream": "https://registry-1.docker.io", "staleness_seconds": 7})
    assert orgs.get("hub").staleness_seconds == 7 and orgs.get("library") is None
    view.down = True
    orgs.forget("hub")
    orgs.forget("library")     # past the short cache, as after `ttl` seconds
    assert orgs.get("hub").staleness_seconds == 7
    assert orgs.get("library") is None          # known unknown: a root path still finds no org here
    with pytest.raises(ConnectionRefusedError):
        orgs.get("never-seen")                  # nothing to fall back on: the caller answers 503
