"""The Grafana board (infra/deploy/grafana/) queries only series a running server's /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from tests.support.inprocess import InProcessServer

pytestmark = pytest.mark.integration
BOARD = Path(__file__).parents[2] / "infra" / "deploy" / "grafana" / "entrepot-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", ""), "info": ("_info",), "unknown": ("",)}
# What the issue asks the board to show, each by the series it needs.
REQUIRED = {"entrepot_manifest_pulls_total", "entrepot_served_bytes_total", "entrepot_upstream_fetched_bytes_total",
            "entrepot_upstream_requests_total", "entrepot_fills_completed_total", "entrepot_stale_serves_total",
            "entrepot_org_images_evicted_total", "entrepot_upstream_ratelimit_remaining", "entrepot_projection_lag",
            "entrepot_http_request_duration_seconds_bucket"}


def queried(board: dict) -> set[str]:
    expressions = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    expressions += [json.dumps(variable.get("query", "")) for variable in board["templating"]["list"]]
    return {name for expression in expressions for name in re.findall(r"\bentrepot_[a-z0-9_]+\b", expression)}


def exposed(text: str) -> set[str]:
    """Every sample name /metrics can carry, from its families' TYPE (labelled series may have no sample yet)."""
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SUFFIXES[family.type]}


def test_every_series_the_grafana_board_queries_is_on_metrics(tmp_path):
    board = json.loads(BOARD.read_text())
    with InProcessServer(Settings(data_dir=str(tmp_path / "data"), organizations=())) as server:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    names = queried(board)
    assert REQUIRED <= names
    assert names - exposed(text) == set()


def test_the_board_imports_with_a_datasource_input_and_panels_that_do_not_overlap():
    board = json.loads(BOARD.read_text())
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS" and board["uid"] == "entrepot-cache"
    cells = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"]
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area
