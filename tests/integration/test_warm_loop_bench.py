"""bench.warm_loop runs: both routes answer every warm pull, and the figures it prints are there."""

from __future__ import annotations

import re

import pytest

from bench import warm_loop

pytestmark = pytest.mark.integration


def test_the_warm_loop_bench_measures_both_routes_with_the_pull_views_stopped(capsys):
    assert warm_loop.main(["tag", "--batches", "2", "--requests", "64", "--no-pull-views"]) == 0
    out = capsys.readouterr().out
    for side in ("direct", "routed"):
        assert re.search(rf"^tag +{side} +[\d,]+ req/s +event loop +[\d.]+ µs CPU/request", out, re.M), out
    assert "group commit: gathering a batch" in out and "load [" in out
