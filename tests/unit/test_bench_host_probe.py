"""bench.scale_rebuild's host probe: samples taken while a pass runs, and their median in the results."""

from __future__ import annotations

import time

from bench import scale_rebuild
from bench.scale_rebuild import HostProbe, markdown


def test_the_probe_samples_before_during_and_after_a_pass(monkeypatch):
    monkeypatch.setattr(scale_rebuild, "PROBE_EVERY", 0.05)
    monkeypatch.setattr(scale_rebuild, "PROBE_LOOP", 10_000)
    with HostProbe() as probe:
        time.sleep(0.3)
    assert len(probe.samples) >= 4   # one before, several during, one after
    assert all(sample > 0 for sample in probe.samples)
    assert min(probe.samples) - 0.01 <= probe.median() <= max(probe.samples) + 0.01


def test_the_results_table_shows_each_checkouts_median_probe():
    run = {"wall": 10.0, "cpu": 5.0, "child_cpu": 4.0, "events": 1000, "machine_cpu": 18.0, "wal_mib": 1.0,
           "max_rss_mib": 100, "child_max_rss_mib": 90, "load_before": [0.5, 0.5, 0.5], "host_probe_ms": 21.5,
           "views": {"audit": {"events": 1000, "write_s": 1.0, "events_per_write_s": 1000}}}
    slower = {**run, "wall": 12.0, "host_probe_ms": 27.0}
    document = {"store": "s", "started": "a", "ended": "b", "machine": {"cores": 2}, "load_before": [0, 0, 0],
                "load_after": [0, 0, 0], "rounds": 1, "results": {"all": {"base": [run], "new": [slower]}},
                "ratios": {}}
    table = markdown(document)
    assert "| all | base | 1,000 | 10.0 |" in table and table.split("| all | base |")[1].splitlines()[0].endswith("| 21.5 |")
    assert table.split("| all | new |")[1].splitlines()[0].endswith("| 27.0 |")
