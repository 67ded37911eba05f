"""Blob traffic becomes TrafficReport events: counted in memory, recorded per org, never twice."""

from __future__ import annotations

import asyncio

from eventsourcing.persistence import OperationalError, StoredEvent

from application.pulls import Pulls
from application.traffic import TrafficMeter, TrafficRecorder
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport, fill_bucket, quantile
from tests.support.clock import ManualClock
from tests.unit.fakes import FakeMetrics


def recorded(pulls: Pulls) -> list:
    return [
        pulls.mapper.to_domain_event(record) for record in pulls.recorder.select_notifications(1, 1000)]


def traffic(meter: TrafficMeter) -> None:
    meter.bytes_served("hub", "blob", 700, "library/alpine")
    meter.bytes_served("hub", "manifest", 30, "library/alpine")
    meter.bytes_fetched("hub", "blob", 500)
    meter.blob_pulled("hub", "hit")
    meter.blob_pulled("hub", "miss")
    meter.fill_completed("hub", 0.3)
    meter.bytes_served("quay", "blob", 5, "coreos/etcd")


def test_each_org_gets_one_report_with_its_bytes_pulls_and_fill_durations():
    inner, clock = FakeMetrics(), ManualClock()
    meter = TrafficMeter(inner)
    pulls = Pulls(env={})
    recorder = TrafficRecorder(pulls, meter, clock, process="test:1")
    traffic(meter)
    asyncio.run(recorder.record())
    events = {event.org: event for event in recorded(pulls)}
    assert set(events) == {"hub", "quay"}
    hub = events["hub"]
    assert isinstance(hub, TrafficReport.Recorded)
    assert hub.bytes_served == {"blob": 700, "manifest": 30} and hub.bytes_fetched == {"blob": 500}
    assert hub.blob_pulls == {"hit": 1, "miss": 1} and hub.fills == 1 and hub.process == "test:1"
    assert hub.fill_seconds[fill_bucket(0.3)] == 1 and sum(hub.fill_seconds) == 1
    assert hub.repositories == {"library/alpine": 730}
    # every count still reached Prometheus
    assert inner.total("bytes_served", "hub", "blob") == 700 and inner.of("fill_completed") == [("hub",)]


def test_nothing_is_recorded_without_traffic_and_counts_start_again_after_a_report():
    meter, pulls = TrafficMeter(FakeMetrics()), Pulls(env={})
    recorder = TrafficRecorder(pulls, meter, ManualClock())
    asyncio.run(recorder.record())
    assert recorded(pulls) == []
    traffic(meter)
    asyncio.run(recorder.record())
    asyncio.run(recorder.record())
    assert len(recorded(pulls)) == 2


def test_reports_the_event_store_refused_are_kept_and_written_once_later():
    meter, pulls = TrafficMeter(FakeMetrics()), Pulls(env={})
    recorder = TrafficRecorder(pulls, meter, ManualClock())
    real_write, failing = pulls.write, [True]

    def write(events):
        if failing[0]:
            raise OperationalError("database down")
        real_write(events)
    pulls.write = write
    traffic(meter)
    asyncio.run(recorder.record())
    assert recorder.kept == 2 and recorded(pulls) == []
    failing[0] = False
    traffic(meter)
    asyncio.run(recorder.record())
    events = recorded(pulls)
    assert recorder.kept == 0 and len(events) == 4
    assert sum(event.bytes_served.get("blob", 0) for event in events if event.org == "hub") == 1400


def test_a_report_whose_write_timed_out_but_committed_is_not_recorded_twice():
    meter, pulls = TrafficMeter(FakeMetrics()), Pulls(env={})
    recorder = TrafficRecorder(pulls, meter, ManualClock())
    real_write, calls = pulls.write, []

    def write(events):   # the first write commits, then "times out"
        calls.append(len(events))
        real_write(events)
        if len(calls) == 1:
            raise OperationalError("connection lost after commit")
    pulls.write = write
    traffic(meter)
    asyncio.run(recorder.record())
    asyncio.run(recorder.record())
    assert len(recorded(pulls)) == 2 and recorder.kept == 0


def test_stop_records_what_was_counted_since_the_last_report():
    async def run(recorder, meter):
        await recorder.start()
        traffic(meter)
        await recorder.stop()
    meter, pulls = TrafficMeter(FakeMetrics()), Pulls(env={})
    asyncio.run(run(TrafficRecorder(pulls, meter, ManualClock(), interval=3600), meter))
    assert len(recorded(pulls)) == 2


def test_fill_quantiles_read_from_the_buckets():
    counts = [0] * (len(FILL_SECONDS_BUCKETS) + 1)
    for seconds in (0.01, 0.2, 0.2, 0.2, 4.0):
        counts[fill_bucket(seconds)] += 1
    assert quantile(counts, 0.5) == 0.25 and quantile(counts, 0.95) == 5.0
    assert quantile([0] * len(counts), 0.5) is None


def test_a_report_counts_for_the_generation_each_org_has_when_it_is_written():
    """A re-created org (domain.org.CacheOrg.Recreated) gets its traffic as its own; a failed lookup keeps the
    last generation known for the org, and an org the directory does not know counts as the first."""
    meter, pulls = TrafficMeter(FakeMetrics()), Pulls(env={})
    generations = {"hub": 2}
    recorder = TrafficRecorder(pulls, meter, ManualClock(), generation_of=lambda org: generations.get(org))
    traffic(meter)
    asyncio.run(recorder.record())
    assert {event.org: event.generation for event in recorded(pulls)} == {"hub": 2, "quay": 1}

    def down(org: str) -> int:
        raise OperationalError("the org store is down")
    recorder._generation_of = down
    traffic(meter)
    asyncio.run(recorder.record())
    assert [(event.org, event.generation) for event in recorded(pulls)[2:]] == [("hub", 2), ("quay", 1)]


def test_a_report_stored_in_version_one_was_of_the_first_org_of_its_name():
    pulls = Pulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    report = TrafficReport(org="hub", process="test:1", since=0.0, until=5.0, bytes_served={"blob": 1},
                           bytes_fetched={}, blob_pulls={}, fills=0, fill_seconds=[], fills_failed=0,
                           repositories={}, generation=3)
    stored = pulls.mapper.to_stored_event(report.collect_events()[0])
    state = pulls.mapper.transcoder.decode(stored.state)
    assert (state.pop("generation"), state.pop("class_version")) == (3, 2)
    pulls.recorder.insert_events([StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                                              pulls.mapper.transcoder.encode(state))])
    event = recorded(pulls)[0]
    assert (event.org, event.generation, event.bytes_served) == ("hub", 1, {"blob": 1})
