"""Two replicas on one PostgreSQL event store: after a scripted workload with hits, misses and stale
serves, either replica's analytics summary equals the sum of both replicas' /metrics, also after an
online (blue/green) rebuild of the analytics view."""

from __future__ import annotations

import secrets

import httpx
import pytest
from eventsourcing.cryptography import AESCipher

from tests.support.analytics import from_metrics, pull_image, wait_until
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.e2e
IMAGE = build_image("analytics-replicas", layers=2, layer_size=30_000)


def summary(server, token: str, **params) -> dict:
    response = httpx.get(f"{server.url}/api/v1/analytics/summary", params={"org": "hub", **params},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def both_metrics(a, b) -> dict:
    ma, mb = from_metrics(a.url, "hub"), from_metrics(b.url, "hub")
    pulls = {r: ma["pulls"].get(r, 0) + mb["pulls"].get(r, 0) for r in {*ma["pulls"], *mb["pulls"]}}
    return {"pulls": pulls, **{key: ma[key] + mb[key] for key in ("bytes_served", "bytes_from_upstream", "fills")}}


def test_either_replicas_summary_is_the_sum_of_both_replicas_metrics_also_after_a_rebuild(
        upstream_registry, entrepot_server_factory, postgres_url):
    push_image(upstream_registry.url, "library/alpine", "3.19", IMAGE)
    token = secrets.token_hex(16)
    sections = {"database": {"url": postgres_url, "schema": f"analytics_{secrets.token_hex(3)}"},
                "analytics": {"traffic_interval_seconds": 0.2}}
    env = {"ENTREPOT_SECRET_KEY": AESCipher.create_key(32), "ENTREPOT_ADMIN_TOKEN": token}
    # staleness 0: every pull asks upstream, so a stopped upstream makes the next pulls stale serves
    org = [{"name": "hub", "upstream": upstream_registry.url, "staleness_seconds": 0}]
    a = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)
    b = entrepot_server_factory(org, env=env, sections=sections, startup_timeout=90)

    for server in (a, b, a, b):
        pull_image(server.url, "hub", "library/alpine", "3.19", IMAGE)
    upstream_registry.stop()
    for server in (a, b):
        pull_image(server.url, "hub", "library/alpine", "3.19", IMAGE)   # stale: upstream is gone

    expected = both_metrics(a, b)
    assert sum(expected["pulls"].values()) == 6 and expected["pulls"].get("stale") == 2, expected
    settled = wait_until(lambda: summary(a, token),
                         lambda s: s["pulls_total"] == 6 and s["bytes_served"] == expected["bytes_served"]
                         and s["fills"] == expected["fills"], timeout=30)
    assert {r: n for r, n in settled["pulls"].items() if n} == expected["pulls"]
    assert (settled["bytes_served"], settled["bytes_from_upstream"], settled["fills"]) == \
        (expected["bytes_served"], expected["bytes_from_upstream"], expected["fills"])
    assert settled["stale"] == 2 and settled["clients"] == 1
    assert summary(b, token, since=settled["since"], until=settled["until"]) == settled

    rebuilt = a.cli("projections", "rebuild", "analytics", timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert wait_until(lambda: summary(b, token, since=settled["since"], until=settled["until"]),
                      lambda s: s == settled, timeout=30) == settled
