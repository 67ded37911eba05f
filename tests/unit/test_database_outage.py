"""The database down or hanging: warm pulls the in-process caches can answer are served, anything else
fails fast with 503 UNAVAILABLE, and the event loop never waits on a read."""

from __future__ import annotations

import asyncio
import time

import pytest

from application.breaker import UpstreamBackoff
from application.bounded_reads import BoundedReads
from application.errors import EventStoreUnavailable, PullNotRecorded, ReadModelUnavailable
from application.oci_errors import oci_answer
from application.pull_through import Limits
from domain.pull import PullResult
from tests.unit.fakes import BrokenPullRecorder, OutageView, RecordsView, edge_cache
from tests.unit.test_pull_through_cache import World, run


def with_outage_view(w: World, **limits) -> OutageView:
    """Rewires w.cache over a view that can go down; tag rows are trusted for 0 s unless told, so
    every lookup asks the view and the held (expired) row is what an outage falls back to."""
    view = OutageView(RecordsView(w.records), w.records.holds_blob)
    w.records.holds_blob = view.holds_blob  # the event-store read of the cross-org check goes down too
    w.cache = edge_cache(records=w.records, orgs=w.orgs, view=view, store=w.store,
                         upstream=UpstreamBackoff(w.upstream, w.clock), pulls=w.group, clock=w.clock,
                         limits=Limits(**{"tag_row_seconds": 0.0, "read_timeout": 0.2, **limits}))
    return view


def is_503_unavailable(error: Exception) -> bool:
    answer = oci_answer(error)
    return answer is not None and (answer.status, answer.code) == (503, "UNAVAILABLE")


def test_a_warm_tag_pull_is_served_from_its_expired_in_process_row_while_the_view_refuses_connections():
    async def scenario(w: World):
        view = with_outage_view(w)
        assert (await w.get()).result is PullResult.MISS
        assert (await w.get()).result is PullResult.HIT    # the view's row is now held in-process
        view.down = "raise"
        reads = view.reads
        answer = await w.get()
        assert answer.result is PullResult.HIT and answer.content == w.manifest
        assert view.reads == reads + 1                      # the view was asked, and failed
    run(scenario)


def test_a_warm_pull_by_digest_is_served_from_memory_while_the_view_hangs():
    async def scenario(w: World):
        view = with_outage_view(w)
        await w.get()
        view.down = "block"
        try:
            answer = await w.get(w.digest)
            assert answer.result is PullResult.HIT and answer.content == w.manifest
        finally:
            view.release()
    run(scenario)


def test_a_tag_never_seen_answers_503_unavailable_without_asking_upstream_while_the_view_is_down():
    async def scenario(w: World):
        view = with_outage_view(w)
        view.down = "raise"
        with pytest.raises(ReadModelUnavailable) as raised:
            await w.get()
        assert is_503_unavailable(raised.value)
        assert w.upstream.calls == []
        assert w.pulls_recorded()[-1].status == 503      # a failed pull, audited as such
    run(scenario)


def test_a_hanging_view_answers_503_within_the_bounded_wait_and_the_event_loop_keeps_running():
    async def scenario(w: World):
        view = with_outage_view(w, read_timeout=0.2)
        view.down = "block"
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        beat = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(ReadModelUnavailable) as raised:
                await w.get()
        finally:
            view.release()
            beat.cancel()
        assert time.monotonic() - started < 2.0
        assert "within 0.2s" in raised.value.message and is_503_unavailable(raised.value)
        assert ticks >= 5   # the loop served other work while the read hung in its thread
    run(scenario)


def test_a_blob_held_for_another_org_answers_503_when_the_event_store_cannot_say_whether_this_org_holds_it():
    async def scenario(w: World):
        w.orgs.apply("mirror", {"upstream": "http://mirror.example"})
        view = with_outage_view(w)
        await w.read_blob(w.layer)                        # brought in by hub
        view.down = "raise"
        with pytest.raises(ReadModelUnavailable) as raised:
            await w.cache.blob("mirror", "library/alpine", w.layer)
        assert is_503_unavailable(raised.value)
        assert (await w.cache.blob("hub", "library/alpine", w.layer)).result is PullResult.HIT  # known in-process
    run(scenario)


def test_the_tag_list_answers_upstreams_error_not_the_databases_when_both_are_down():
    async def scenario(w: World):
        view = with_outage_view(w)
        view.down = "raise"
        w.upstream.down = True
        with pytest.raises(Exception) as raised:
            await w.cache.tags("hub", "library/alpine")
        assert not isinstance(raised.value, ReadModelUnavailable)
        assert oci_answer(raised.value).status == 503
    run(scenario)


def test_a_pull_whose_audit_record_fails_answers_503_not_500():
    async def scenario(w: World):
        cache = edge_cache(records=w.records, orgs=w.orgs, view=RecordsView(w.records), store=w.store,
                           upstream=w.upstream, pulls=BrokenPullRecorder(), clock=w.clock)
        with pytest.raises(PullNotRecorded) as raised:
            await cache.manifest("hub", "library/alpine", "3.19", [])
        assert is_503_unavailable(raised.value)
    run(scenario)


class HangingRecorder:
    async def record(self, pull) -> None:
        await asyncio.sleep(60)


def test_a_pull_whose_audit_record_hangs_is_answered_within_the_bounded_wait():
    # It was a 503 before the backlog; a hang is an outage of the event store, and the pulls port
    # (GroupCommit) keeps a pull it did not record in time, so the answer goes out, still bounded.
    async def scenario(w: World):
        cache = edge_cache(records=w.records, orgs=w.orgs, view=RecordsView(w.records), store=w.store,
                           upstream=w.upstream, pulls=HangingRecorder(), clock=w.clock,
                           limits=Limits(record_timeout=0.1))
        started = time.monotonic()
        answer = await cache.manifest("hub", "library/alpine", "3.19", [])
        assert answer.content == w.manifest
        assert time.monotonic() - started < 2.0
    run(scenario)


class BoundingRecorder:
    """A pulls port that bounds its own wait (as GroupCommit does); this one answers late, within its bound."""

    wait_bound = 0.05

    def __init__(self) -> None:
        self.finished = self.cancelled = 0

    async def record(self, pull) -> None:
        try:
            await asyncio.sleep(1.5)   # past the limit (0.5 s), which the manifest's record must meet on a busy machine
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1


@pytest.mark.parametrize("bound, timer_of_its_own", [(0.05, False), (None, True), (10.0, True)])
def test_the_audit_times_a_pulls_wait_only_when_the_pulls_port_does_not_bound_it_within_the_limit(
        bound, timer_of_its_own):
    async def scenario(w: World):
        recorder = BoundingRecorder()
        recorder.wait_bound = bound
        cache = edge_cache(records=w.records, orgs=w.orgs, view=RecordsView(w.records), store=w.store,
                           upstream=w.upstream, pulls=recorder, clock=w.clock, limits=Limits(record_timeout=0.5))
        answer = await cache.manifest("hub", "library/alpine", "3.19", [])
        assert answer.content == w.manifest
        assert (recorder.cancelled, recorder.finished) == ((1, 0) if timer_of_its_own else (0, 1))
    run(scenario)


def refuse_writes(w: World) -> dict:
    """The Pulls application's event store refuses writes while `state["down"]` is true."""
    state = {"down": False}
    write = w.pulls.write

    def maybe(events):
        if state["down"]:
            raise EventStoreUnavailable("the event store (PostgreSQL) is unavailable; try again shortly")
        write(events)
    w.pulls.write = maybe
    return state


async def until_recorded(w: World, count: int) -> list:
    for _ in range(500):
        if len(w.pulls_recorded()) >= count:
            break
        await asyncio.sleep(0.01)
    return w.pulls_recorded()


def test_a_warm_pull_is_served_while_the_event_store_refuses_writes_and_audited_once_it_takes_them():
    async def scenario(w: World):
        event_store = refuse_writes(w)
        await w.get()
        event_store["down"] = True
        started = time.monotonic()
        answers = [await w.get(), await w.get(w.digest)]
        assert [a.result for a in answers] == [PullResult.HIT, PullResult.HIT]
        assert all(a.content == w.manifest for a in answers)
        assert time.monotonic() - started < 2.0
        assert len(w.pulls_recorded()) == 1   # the two hits wait in this process
        event_store["down"] = False
        recorded = await until_recorded(w, 3)
        assert [(p.reference, p.result) for p in recorded] == [("3.19", "miss"), ("3.19", "hit"), (w.digest, "hit")]
    run(scenario)


def test_a_failed_pull_during_an_event_store_outage_keeps_its_error_answer_and_is_audited_later():
    async def scenario(w: World):
        event_store = refuse_writes(w)
        event_store["down"] = True
        w.records.record_manifest = refuse        # a miss needs the event store: it fails fast
        started = time.monotonic()
        with pytest.raises(EventStoreUnavailable) as raised:
            await w.get()
        assert is_503_unavailable(raised.value) and time.monotonic() - started < 2.0
        event_store["down"] = False
        recorded = await until_recorded(w, 1)
        assert [(p.result, p.status, p.error_code) for p in recorded] == [("error", 503, "UNAVAILABLE")]
    run(scenario)


def test_reads_left_hanging_on_a_dead_database_are_bounded_and_past_the_bound_new_ones_fail_at_once():
    async def scenario(w: World):
        view = OutageView(RecordsView(w.records), w.records.holds_blob)
        reads = BoundedReads(view, view.holds_blob, timeout=0.05, max_in_flight=2)
        view.down = "block"
        try:
            for _ in range(2):  # each times out, its thread still waiting on the database
                with pytest.raises(ReadModelUnavailable, match="within"):
                    await reads.tag("hub", "library/alpine", "3.19")
            started = time.monotonic()
            with pytest.raises(ReadModelUnavailable, match="still unanswered"):
                await reads.tag("hub", "library/alpine", "3.19")
            assert time.monotonic() - started < 0.05 and view.reads == 2  # no third thread was started
        finally:
            view.down = None
            view.release()
        for _ in range(100):    # the database answers again: the hung reads finish, new ones run
            try:
                assert await reads.tag("hub", "library/alpine", "3.19") is None
                break
            except ReadModelUnavailable:
                await asyncio.sleep(0.01)
        assert view.reads == 3
    run(scenario)


def refuse(*_args, **_kwargs):
    raise ConnectionRefusedError("connection refused (the database is down)")


def test_a_revalidated_tag_is_served_when_the_event_store_cannot_record_the_check():
    async def scenario(w: World):
        await w.get()
        w.clock.advance(301)
        w.records.record_tag = refuse
        answer = await w.get()
        assert answer.result is PullResult.REVALIDATED and answer.content == w.manifest
        assert (await w.get()).result is PullResult.HIT   # this process remembers the check
    run(scenario)


def test_a_miss_the_event_store_cannot_record_answers_503_unavailable_not_500():
    async def scenario(w: World):
        w.records.record_manifest = refuse
        with pytest.raises(EventStoreUnavailable) as raised:
            await w.get()
        assert is_503_unavailable(raised.value)
        assert w.pulls_recorded()[-1].status == 503
    run(scenario)
