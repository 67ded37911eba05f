"""The audit chain's pure parts: canonical bytes, links, the segment format, periodic seals (fakes only)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from types import SimpleNamespace
from uuid import UUID, uuid4

import pytest

from application.audit_seals import AuditSeals
from domain.archive import InvalidSegment, SegmentHeader, SegmentRecord, decode_segment, encode_segment
from domain.audit_chain import GENESIS, ChainHead, chained, link_of, links_of, next_link

ID = "6f1c2d3e-0000-4000-8000-000000000001"


def test_a_link_covers_every_field_of_the_stored_event():
    base = dict(previous=GENESIS, application="Pulls", position=7, originator_id=ID, originator_version=1,
                topic="domain.pull:Pull.Recorded", state=b'{"org":"hub"}')
    link = next_link(**base)
    for field, other in (("previous", b"\x01" * 32), ("application", "Access"), ("position", 8),
                         ("originator_id", ID.replace("1", "2")), ("originator_version", 2),
                         ("topic", "domain.pull:Pull.Other"), ("state", b'{"org":"hug"}')):
        assert next_link(**{**base, field: other}) != link, field


def test_a_uuid_and_its_text_in_any_case_give_the_same_link():
    one = next_link(GENESIS, "Pulls", 1, UUID(ID), 1, "t", b"s")
    assert next_link(GENESIS, "Pulls", 1, ID.upper(), 1, "t", b"s") == one


def test_only_pulls_of_the_pulls_log_and_every_access_event_are_chained():
    assert chained("Pulls", "domain.pull:Pull.Recorded")
    assert not chained("Pulls", "domain.traffic:TrafficReport.Recorded")
    assert chained("Access", "domain.robot:AdminAction.Recorded")
    assert not chained("Registry", "domain.org:CacheOrg.Registered")


def records(n: int) -> list[SegmentRecord]:
    out, link = [], GENESIS
    for i in range(1, n + 1):
        record = SegmentRecord(i, ID, 1, "domain.pull:Pull.Recorded", b'{"i":%d}' % i, "")
        link = link_of(link, "Pulls", record)
        out.append(SegmentRecord(i, ID, 1, record.topic, record.state, link.hex()))
    return out


def test_a_segment_round_trips_byte_exact_and_is_deterministic():
    rs = records(3)
    header = SegmentHeader("Pulls", 1, 3, 3, "", GENESIS.hex(), rs[-1].link)
    data = encode_segment(header, rs)
    assert encode_segment(header, rs) == data      # a rewrite after a crash is the same object
    assert decode_segment(data) == (header, rs)


def test_a_segment_whose_header_does_not_describe_its_lines_is_refused():
    rs = records(3)
    data = encode_segment(SegmentHeader("Pulls", 1, 3, 3, "", GENESIS.hex(), rs[-1].link), rs[:2])
    with pytest.raises(InvalidSegment, match="header"):
        decode_segment(data)
    with pytest.raises(InvalidSegment, match="unreadable"):
        decode_segment(gzip.compress(b"not json\n"))
    with pytest.raises(InvalidSegment):
        decode_segment(b"not gzip")


@dataclass
class FakeChain:
    heads_now: list

    def heads(self):
        return list(self.heads_now)


class FakeAccess:
    def __init__(self):
        self.saved, self.position = [], 0

    def save(self, seal):
        self.saved.append(seal)
        self.position += 1

        class Recording:
            class notification:
                id = self.position
        return [Recording]


class Clock:
    def now(self):
        return 1.0


def test_the_periodic_seal_is_recorded_only_when_a_chain_moved_its_own_seal_aside():
    chain = FakeChain([ChainHead("Pulls", 5, 5, "a" * 64), ChainHead("Access", 2, 2, "b" * 64)])
    access = FakeAccess()
    seals = AuditSeals(access, chain, Clock())
    assert seals.seal_if_moved() is not None                      # the first one
    chain.heads_now[1] = ChainHead("Access", 1, 3, "c" * 64)       # the view now holds that seal (position 1)
    assert seals.seal_if_moved() is None
    chain.heads_now[0] = ChainHead("Pulls", 9, 6, "d" * 64)        # a pull
    assert seals.seal_if_moved().actor == "system"
    assert len(access.saved) == 2


def test_links_of_a_run_of_records_are_link_of_each_in_turn():
    records = [SimpleNamespace(id=n + 1, originator_id=uuid4() if n % 3 else str(uuid4()).upper(),
                               originator_version=1 + n % 2, topic=("a:B", "c:D")[n % 2],
                               state=f'{{"n": {n}}}'.encode() if n % 2 else memoryview(b"\x00\xff"))
               for n in range(7)]
    expected, link = [], GENESIS
    for record in records:
        link = link_of(link, "Pulls", record)
        expected.append((link, str(record.originator_id).lower()))
    assert list(links_of(GENESIS, "Pulls", records)) == expected
