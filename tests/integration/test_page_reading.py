"""The replay's page reader (infra/projection_runtime/page_reading.py) returns what the recorder's
select_notifications returns, field for field and type for type, on both backends and with text ids."""

from __future__ import annotations

from uuid import UUID

import pytest

from application.pulls import Pulls
from domain.pull import Pull
from domain.traffic import TrafficReport
from infra.projection_runtime.page_reading import _uuid, select_page

pytestmark = pytest.mark.integration

ID = "6f1c2d3e-9a0b-4c5d-8e7f-a1b2c3d4e5f6"


def _write(pulls: Pulls, count: int) -> None:
    events = [Pull.recorded("hub", f"library/image{n}", "latest", "sha256:" + "1" * 64, "hit", "10.0.0.1",
                            "containerd/2.0", 1_700_000_000.0 + n, actor="anonymous") for n in range(count)]
    pulls.write(events)


def _same(fast: list, slow: list) -> None:
    assert fast == list(slow)
    for a, b in zip(fast, slow):
        assert type(a) is type(b)
        assert list(a.__dict__) == list(b.__dict__)
        assert [type(v) for v in a.__dict__.values()] == [type(v) for v in b.__dict__.values()]
        assert str(a.originator_id) == str(b.originator_id) and hash(a.originator_id) == hash(b.originator_id)


@pytest.mark.parametrize("id_type", ["uuid", "text"])
def test_pages_equal_the_recorders_notifications(env_factory, event_store_backend, id_type):
    env = env_factory("pages")
    if id_type == "text":
        if event_store_backend == "postgres":
            return   # text ids are the SQLite case
        env = {**env, "ORIGINATOR_ID_TYPE": "text"}
    pulls = Pulls(env=env)
    try:
        _write(pulls, 30)
        head = pulls.recorder.max_notification_id()
        topics = [Pull.Recorded.__module__ + ":" + Pull.Recorded.__qualname__]
        for start, limit, stop, wanted in ((0, 100, head, ()), (3, 7, head, ()), (10, 5, 12, ()), (0, 8, head, topics),
                                           (head, 10, head, ()), (5, 100, head, [TrafficReport.Recorded.__qualname__])):
            slow = pulls.recorder.select_notifications(start=start, limit=limit, stop=stop, topics=list(wanted),
                                                       inclusive_of_start=False)
            _same(select_page(pulls.recorder, start, limit, stop, wanted), slow)
        assert len(select_page(pulls.recorder, 0, 100, head)) == 30
    finally:
        pulls.close()


@pytest.mark.parametrize("text", [ID, ID.upper(), "{%s}" % ID, "urn:uuid:%s" % ID, ID.replace("-", ""),
                                  "00000000-0000-0000-0000-000000000000"])
def test_a_uuid_from_text_is_uuids_own(text):
    fast, slow = _uuid(text), UUID(text)
    assert fast == slow and str(fast) == str(slow) and hash(fast) == hash(slow) and fast.is_safe == slow.is_safe


@pytest.mark.parametrize("text", ["", "not a uuid", "0" * 31, "0" * 33, "0" * 16 + " " * 4 + "0" * 16,
                                  "g" * 32, "-" * 36])
def test_text_uuid_refuses_is_refused_by_the_fast_path_too(text):
    with pytest.raises(ValueError):
        UUID(text)
    with pytest.raises(ValueError):
        _uuid(text)
