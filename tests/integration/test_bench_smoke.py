"""The benchmark (bench/) starts, measures every target once on tiny images, and writes its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.registry import REGISTRY_BINARY

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = ("manifest_by_tag", "manifest_by_digest", "blob_1_stream", "blob_4_streams", "cold_1_client",
                "cold_20_clients", "cold_memory")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    require(REGISTRY_BINARY, "wrk", "curl", "nginx")
    directory = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--no-postgres", "--results-dir", str(directory / "results"),
         "--work-dir", str(directory / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    [path] = (directory / "results").glob("*.json")
    return done.stdout, json.loads(path.read_text()), directory


def test_the_benchmark_prints_a_table_with_ratios_and_the_issue_targets(tiny_run):
    table, _, _ = tiny_run
    for line in ("warm manifest GET by tag", "warm blob GET, 4 streams", "cold pull, 3 clients",
                 "entrepot/peer", "target (from issue 6)", "warm manifest by tag >= 5x distribution proxy"):
        assert line in table


def test_the_json_holds_machine_versions_medians_ratios_and_a_verdict_per_target(tiny_run):
    _, result, _ = tiny_run
    assert result["machine"]["cores"] >= 1
    assert {"python", "distribution", "wrk", "curl"} <= set(result["versions"])
    assert result["failures"] == []
    for measurement in MEASUREMENTS:
        assert {"peer", "entrepot", "entrepot-nginx"} <= set(result["medians"][measurement]), measurement
        assert {"entrepot/peer", "entrepot-nginx/peer"} <= set(result["ratios"][measurement])
    assert {"upstream"} <= set(result["medians"]["manifest_by_tag"])
    assert {v["status"] for v in result["verdicts"]} <= {"pass", "miss"}
    assert len(result["verdicts"]) == 8 * 2   # each goal for entrepot and entrepot-nginx
    assert result["skipped"] == {"entrepot-pg": "--no-postgres"}


def test_upstream_bytes_are_counted_for_each_cache_from_its_own_upstream_log(tiny_run):
    _, result, _ = tiny_run
    cold = result["medians"]["cold_20_clients"]
    # every byte a client got came from upstream at least once, so a ratio below 1 means a lost count
    assert cold["entrepot"]["upstream_ratio"] >= 1.0
    assert cold["peer"]["upstream_ratio"] >= 1.0


def test_the_work_dir_is_removed_after_the_run(tiny_run):
    _, _, directory = tiny_run
    assert not (directory / "work").exists()
