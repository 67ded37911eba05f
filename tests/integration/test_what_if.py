"""What-if against a real run: a scripted pull sequence through a quota (skopeo pulls from a real upstream
registry, the evictor after each pull), then `simulate` with the same quota: the same hits, the same
evictions, in the same order, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import time

import pytest

from infra.settings import DatabaseSettings, OrgSettings, SecuritySettings, Settings, StorageSettings
from interfaces.cli import main as cli
from tests.support.clock import ManualClock
from tests.support.components import require
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer
from tests.support.postgres import BACKENDS
from tests.support.retention import REPO, Cache, image_bytes

pytestmark = pytest.mark.integration
# A short grace period keeps the in-process answers of an evicted image short too (interfaces/bootstrap.py:
# at most grace/2 seconds, and 1 s for a tag row); they run on real time, which the ManualClock does not move.
GRACE = 1.0
IN_PROCESS_ANSWERS = 1.2
TAGS = ("1", "2", "3", "4")
# LRU and LFU disagree on several victims here; 4 pulls from the start, 1 comes back after its eviction.
SEQUENCE = ("1", "1", "1", "2", "3", "4", "2", "1", "3", "3", "4", "2", "1")


@pytest.fixture(scope="module")
def images():
    return {tag: build_image(f"what-if-{tag}", layers=2, layer_size=50_000) for tag in TAGS}


@pytest.fixture(params=BACKENDS)
def cache_factory(request, upstream_registry, images, tmp_path):
    require("skopeo")
    for tag, image in images.items():
        push_image(upstream_registry.url, REPO, tag, image)
    database = DatabaseSettings()
    if request.param == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"w_{secrets.token_hex(3)}")
    opened = []

    def make(quota: int, policy: str) -> Cache:
        settings = Settings(data_dir=str(tmp_path / f"data-{policy}"), database=database,
                            organizations=(OrgSettings(name="hub", upstream=upstream_registry.url, quota_bytes=quota,
                                                       eviction_policy=policy),),
                            storage=StorageSettings(delete_grace_seconds=GRACE),
                            security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))
        clock = ManualClock()
        server = InProcessServer(settings, clock=clock).__enter__()
        opened.append(server)
        return Cache(server, clock, tmp_path)

    yield make
    for server in opened:
        server.__exit__()


def room_for_two(images) -> int:
    sizes = [image_bytes(image) for image in images.values()]
    quota = int(2.5 * max(sizes))
    assert 3 * min(sizes) > quota and 2 * max(sizes) <= 0.9 * quota
    return quota


# LRU only: under LFU an image cached again is ranked by its pulls before its eviction until its new pull
# is projected, and whether the evictor's round (nudged by the fill) sees that pull is a race in the real
# run; the simulator takes the usual order (the round first), so LFU agrees on most runs, not all.
def test_the_simulated_lru_equals_a_real_run_of_the_quota_on_the_same_pulls(cache_factory, images):
    policy = "lru"
    quota = room_for_two(images)
    cache = cache_factory(quota, policy)
    for tag in SEQUENCE:
        cache.clock.advance(3600)     # an hour between pulls: LFU's decay and LRU's order both matter
        cache.pull(tag)
        cache.settle()                # the evictor's round after the fill, as in service
        time.sleep(IN_PROCESS_ANSWERS)   # so that the next pull of an evicted image misses, as the simulator has it
    digests = {image.digest: tag for tag, image in images.items()}

    answer = cache.api("POST", "/organizations/hub/simulate", json={"quota_bytes": quota, "policies": [policy]})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    recorded, [simulated] = report["recorded"], report["simulated"]
    assert recorded["pulls"] == simulated["pulls"] == len(SEQUENCE)
    assert recorded["evictions"] >= 2     # the sequence is meant to make the quota work
    assert (simulated["hits"], simulated["evictions"]) == (recorded["hits"], recorded["evictions"])
    assert [digests[e.split("@", 1)[1]] for e in simulated["evicted"]] == \
        [digests[e.split("@", 1)[1]] for e in recorded["evicted"]]
    assert report["unknown_pulls"] == 0


def test_the_cli_prints_the_policies_side_by_side_and_bad_input_is_refused(cache_factory, images, capsys):
    cache = cache_factory(room_for_two(images), "lru")
    for tag in ("1", "2", "1"):
        cache.clock.advance(60)
        cache.pull(tag)
        cache.settle()
    common = ["--url", cache.server.url, "--token", cache.container.admin_token]
    assert cli(["simulate", *common, "--org", "hub", "--quota", "1GiB", "--policy", "lru,lfu,gdsf",
                "--since", "30d"]) == 0
    out = capsys.readouterr().out
    assert "recorded" in out and "gdsf" in out and "hit ratio" in out
    for body, field in (({"quota_bytes": -1}, "quota_bytes"), ({"quota_bytes": 1, "policies": ["fifo"]}, "policies"),
                        ({"quota_bytes": 1, "since": "yesterday"}, "since")):
        refused = cache.api("POST", "/organizations/hub/simulate", json=body)
        assert refused.status_code in (400, 422), refused.text
        assert field in refused.text
    assert cache.api("POST", "/organizations/nope/simulate", json={"quota_bytes": 1}).status_code == 404
