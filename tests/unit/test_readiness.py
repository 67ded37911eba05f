"""/readyz's verdict from a list of probes: required ones make a replica unavailable, the others degraded."""

from __future__ import annotations

import asyncio

from interfaces.http import health
from interfaces.http.health import Probe, Unavailable, readiness


def answer(state):
    async def check():
        return state
    return check


def failing(error: Exception):
    async def check():
        raise error
    return check


def verdict(*probes: Probe) -> dict:
    return asyncio.run(readiness(list(probes)))


def test_every_probe_ok_is_ready_and_each_component_is_named_in_order():
    report = verdict(Probe("event_store", answer("ok")), Probe("redis", answer("not configured"), required=False))
    assert report == {"status": "ready", "event_store": "ok", "redis": "not configured"}
    assert list(report) == ["status", "event_store", "redis"]


def test_a_required_probe_failing_makes_the_replica_unavailable_with_its_error():
    report = verdict(Probe("event_store", failing(ConnectionError("refused"))),
                     Probe("redis", failing(ConnectionError("down")), required=False))
    assert report == {"status": "unavailable", "event_store": "unavailable", "redis": "unavailable",
                      "errors": {"event_store": "refused", "redis": "down"}}


def test_an_optional_probe_failing_or_a_lagging_one_only_degrades_the_replica():
    assert verdict(Probe("blob_storage", answer("ok")),
                   Probe("redis", failing(ConnectionError("down")), required=False))["status"] == "degraded"
    lagging = verdict(Probe("read_model", answer(("lagging", {"read_model_lag": 5000}))))
    assert lagging == {"status": "degraded", "read_model": "lagging", "read_model_lag": 5000}


def test_a_failing_probe_keeps_the_details_it_measured():
    report = verdict(Probe("read_model", failing(Unavailable("crashed projection(s): tags", {"read_model_lag": 3}))))
    assert report == {"status": "unavailable", "read_model": "unavailable", "read_model_lag": 3,
                      "errors": {"read_model": "crashed projection(s): tags"}}


def test_a_hanging_probe_is_answered_unavailable_in_time(monkeypatch):
    monkeypatch.setattr(health, "CHECK_SECONDS", 0.01)

    async def hangs():
        await asyncio.Event().wait()
    report = verdict(Probe("blob_storage", hangs))
    assert (report["status"], report["blob_storage"]) == ("unavailable", "unavailable")
    assert report["errors"]["blob_storage"] == "TimeoutError"
