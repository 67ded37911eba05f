"""/api/v1/analytics and `entrepot stats` against a real server: after a scripted workload the summary,
the CLI and /metrics agree on pulls and bytes, and so does the summary after `projections rebuild`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support.analytics import from_metrics, pull_image, wait_until
from tests.support.images import build_image, push_image
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration
TOKEN = "analytics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALPINE = build_image("analytics/alpine", layers=2, layer_size=50_000)
NGINX = build_image("analytics/nginx", layers=1, layer_size=20_000)


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", ALPINE)
    push_image(registry.url, "library/nginx", "1.27", NGINX)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    return module_entrepot_server_factory(
        [{"name": "hub", "upstream": upstream.url, "default": True}, {"name": "quiet", "upstream": upstream.url}],
        env={"ENTREPOT_ADMIN_TOKEN": TOKEN}, sections={"analytics": {"traffic_interval_seconds": 0.2}},
        startup_timeout=60)   # it is restarted for the rebuild: slow on a busy 2-core box


@pytest.fixture(scope="module")
def workload(server):
    """Alpine pulled three times (1 miss, 2 hits), nginx once (a miss): 4 pulls, 5 blob fills (configs and layers)."""
    received = sum(pull_image(server.url, "hub", "library/alpine", "3.19", ALPINE) for _ in range(3))
    received += pull_image(server.url, "hub", "library/nginx", "1.27", NGINX)
    return received


def summary(server, **params) -> dict:
    response = httpx.get(f"{server.url}/api/v1/analytics/summary", params=params, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def settled(server) -> dict:
    return wait_until(lambda: summary(server, org="hub"),
                      lambda s: s["pulls_total"] == 4 and s["fills"] == 5 and s["bytes_served"] > 0)


def test_the_summary_counts_the_workloads_pulls_and_bytes_as_metrics_does(server, workload):
    hub = settled(server)
    assert hub["pulls"] == {"hit": 2, "miss": 2, "stale": 0, "revalidated": 0, "error": 0}
    assert hub["hit_ratio"] == 0.5 and hub["bytes_served"] == workload
    fetched = len(ALPINE.manifest_bytes) + len(NGINX.manifest_bytes) + sum(map(len, ALPINE.blobs.values())) \
        + sum(map(len, NGINX.blobs.values()))
    assert hub["bytes_from_upstream"] == fetched and hub["bytes_saved"] == workload - fetched
    assert (hub["clients"], hub["repositories"], hub["fills"]) == (1, 2, 5)
    assert hub["fill_seconds_p95"] is not None
    metrics = from_metrics(server.url, "hub")
    assert {r: n for r, n in hub["pulls"].items() if n} == metrics["pulls"]
    assert (hub["bytes_served"], hub["bytes_from_upstream"], hub["fills"]) == \
        (metrics["bytes_served"], metrics["bytes_from_upstream"], metrics["fills"])


def test_every_org_is_in_the_summary_without_org(server, workload):
    settled(server)
    orgs = {entry["org"]: entry for entry in summary(server)["orgs"]}
    assert orgs["hub"]["pulls_total"] == 4 and orgs["quiet"]["pulls_total"] == 0


def test_series_and_top_show_the_same_pulls(server, workload):
    settled(server)
    series = httpx.get(f"{server.url}/api/v1/analytics/series", headers=AUTH,
                       params={"org": "hub", "metric": "pulls_total", "bucket": "minute", "since": "10m"}).json()
    assert len(series["points"]) >= 10 and sum(point["value"] for point in series["points"]) == 4
    top = httpx.get(f"{server.url}/api/v1/analytics/top", headers=AUTH, params={"org": "hub", "by": "bytes"}).json()
    assert [entry["repository"] for entry in top["repositories"]] == ["library/alpine", "library/nginx"]
    assert top["images"][0] == {"repository": "library/alpine", "reference": "3.19", "pulls": 3}


@pytest.mark.parametrize(("path", "params", "status"), [
    ("summary", {"org": "nobody"}, 404),
    ("summary", {"since": "yesterday-ish"}, 422),
    ("summary", {"since": "1h", "until": "2h"}, 422),
    ("series", {"org": "hub", "metric": "nonsense"}, 422),
    ("series", {"org": "hub", "bucket": "week"}, 422),
    ("series", {"org": "hub", "bucket": "minute", "since": "30d"}, 422),
    ("series", {}, 422),
    ("top", {"org": "hub", "limit": "0"}, 422),
    ("top", {"org": "hub", "by": "stars"}, 422),
])
def test_bad_queries_get_the_admin_apis_json_errors(server, path, params, status):
    response = httpx.get(f"{server.url}/api/v1/analytics/{path}", params=params, headers=AUTH, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in ("invalid", "not_found")


def test_analytics_needs_the_admin_token_and_is_in_the_openapi_document(server):
    assert httpx.get(f"{server.url}/api/v1/analytics/summary").status_code == 401
    paths = httpx.get(f"{server.url}/schema/openapi.json").json()["paths"]
    assert {"/api/v1/analytics/summary", "/api/v1/analytics/series", "/api/v1/analytics/top"} <= set(paths)


def stats(server, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENTREPOT_")}
    env.update({"ENTREPOT_URL": server.url, "ENTREPOT_ADMIN_TOKEN": TOKEN})
    result = subprocess.run([sys.executable, "-m", "interfaces.cli", "stats", *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_entrepot_stats_prints_the_summary_as_a_table_or_json(server, workload):
    hub = settled(server)
    as_json = json.loads(stats(server, "hub", "--json"))
    assert {key: as_json[key] for key in ("pulls", "bytes_served", "bytes_saved")} == \
        {key: hub[key] for key in ("pulls", "bytes_served", "bytes_saved")}
    assert as_json["top"]["repositories"][0]["repository"] == "library/alpine"
    table = stats(server).splitlines()
    assert table[1].split()[:4] == ["ORG", "PULLS", "HIT", "MISS"]
    assert table[2].split()[:4] == ["hub", "4", "2", "2"] and "50.0%" in table[2]
    # --generation: hub was never re-created, so its first org is the latest one, and a second has pulled nothing.
    first = json.loads(stats(server, "hub", "--json", "--generation", "1"))
    assert (first["generation"], first["pulls"]) == (1, hub["pulls"])
    assert json.loads(stats(server, "hub", "--json", "--generation", "2"))["pulls_total"] == 0
    assert json.loads(stats(server, "hub", "--json", "--generation", "all"))["pulls"] == hub["pulls"]


def test_a_rebuilt_analytics_view_answers_the_same_summary(server, workload):
    before = settled(server)
    server.stop()
    rebuilt = server.cli("projections", "rebuild", "analytics")
    assert rebuilt.returncode == 0, rebuilt.stderr
    server.start()
    after = wait_until(lambda: summary(server, org="hub", since=before["since"], until=before["until"]),
                       lambda s: s["pulls_total"] == 4)
    assert after == before
