"""The Registry log's own views gathered in a bulk rebuild (tags, manifests, history, on both backends):
each folds a gathering's events per key and writes a statement per kind of change; the rows must be those event by
event."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import Tracking

from domain.cache import CachedManifest, TagResolution
from domain.org import CacheOrg
from infra.projection_runtime import open_view
from infra.projection_runtime.bulk import Gathering
from tests.support.views import events_of

pytestmark = pytest.mark.integration
ORG, OTHER, REPO = "hub", "quay", "library/app"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
OTHER_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def d(char: str) -> str:
    return "sha256:" + char * 64


def registry_pages() -> list[list]:
    """Tags resolved, revalidated, retargeted, dropped and resolved again (in one page and across pages),
    manifests cached, evicted and cached again, an org deleted and registered again (pages a gathering of the
    history view cannot take), a tag revalidated first thing in a page after its org came back."""
    pages: list[list] = []

    def page(*items) -> None:
        pages.append(events_of(*items))

    def manifest(digest, at, org=ORG, repository=REPO):
        return CachedManifest(org=org, repository=repository, digest=digest, media_type=IMAGE, size=int(100 + 10 * at),
                              blobs=[d("1"), d("2")], children=[], cached_at=at)

    def tag(name, digest, at, org=ORG, repository=REPO, media_type=IMAGE):
        return TagResolution(org=org, repository=repository, tag=name, digest=digest, media_type=media_type,
                             checked_at=at)

    hub, quay = CacheOrg(name=ORG, settings={"upstream": "docker.io"}), CacheOrg(name=OTHER, settings={"upstream": "q"})
    page(hub, quay)
    a, b = manifest(d("a"), 1.0), manifest(d("b"), 2.0)
    v1, latest, lone = tag("v1", d("a"), 1.0), tag("latest", d("a"), 1.0), tag("x", d("c"), 1.5, org=OTHER)
    v1.observe(d("a"), IMAGE, 1.2)                                          # revalidated in the same page
    page(a, b, v1, latest, lone, manifest(d("c"), 1.5, org=OTHER), tag("y", d("c"), 1.6, org=OTHER, repository="r2"))
    latest.observe(d("b"), OTHER_TYPE, 3.0)                                  # retargeted
    v1.drop("quota", 3.5)
    a.evict(d("a"), ["v1"], 100, "quota", "lru", "system:evictor", 3.5)
    lone.drop("flush", 3.6)                                                  # the org's last tag
    page(latest, v1, a, lone)
    v1.observe(d("a"), IMAGE, 4.0)                                           # after a drop: retargeted from ""
    a.recache(IMAGE, 101, [d("1")], [], 4.0)
    latest.observe(d("b"), OTHER_TYPE, 4.5)                                  # revalidated
    page(v1, a, latest)
    quay.delete()
    page(quay)                                                               # closes the org's intervals
    quay.reconfigure({"upstream": "q"})
    page(quay)
    tagged = TagResolution(org=OTHER, repository="r2", tag="y", digest=d("c"), media_type=IMAGE, checked_at=1.6)
    tagged.collect_events()
    tagged.observe(d("c"), IMAGE, 6.0)                                       # revalidated first in its page
    evicted = manifest(d("c"), 1.5, org=OTHER)
    evicted.collect_events()
    evicted.evict(d("c"), [], 0, "flush", "", "admin", 6.5)
    page(tagged, evicted, manifest(d("e"), 7.0, org=OTHER))
    return pages


def written(view, pages: list[list], limit: int | None) -> dict:
    """The view's rows after the pages, event by event (limit None) or gathered by `limit` events."""
    gathering = Gathering(view, limit) if limit else None
    position = 0
    for events in pages:
        batch = []
        for event in events:
            position += 1
            if type(event) in view.handles:   # as a replay filters a view's pages by topic
                batch.append((event, Tracking("Registry", position)))
        if not batch or (gathering is not None and gathering.add(batch)):
            continue
        if gathering is not None:
            gathering.write()
        view.process(batch)
    if gathering is not None:
        gathering.write()
        gathering.close()
    return {table: rows for table, rows in view.dump().items() if "tracking" not in table}


@pytest.mark.parametrize("event_store_backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("name", ["tags", "manifests", "history"])
def test_a_gathering_of_registry_events_writes_what_they_write_one_by_one(env_factory, name):
    pages = registry_pages()
    dumps = []
    for tag, limit in (("kept", None), ("gather1", 1), ("gather3", 3), ("gatherall", 1000)):
        view = open_view(name, env_factory(f"{name}-{tag}"))
        try:
            assert view.gathers   # these views of the Registry log gather in a bulk rebuild
            dumps.append(written(view, pages, limit))
        finally:
            view.close()
    kept = dumps[0]
    assert all(kept.values())
    if name == "history":
        assert {row[9] for row in kept["tag_history"]} >= {"retargeted", "quota", "flush", "org deleted", None}
    for tag, dump in zip(("gather1", "gather3", "gatherall"), dumps[1:]):
        assert dump == kept, tag
