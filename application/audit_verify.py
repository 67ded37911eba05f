"""`entrepot audit verify`: recompute the audit chain from the stored events and compare it with the chain
view, the archive and the seals; the first event that does not match is named.

For each chained application, two streams are walked in position order:
- the records: the archived events (archive segments, oldest first), then the events in the event store;
  from these the links are recomputed (domain/audit_chain.py);
- the expected links: those the archive segments recorded, then the chain view's rows.
A record with no expected link at or below the view's head was inserted or moved; an expected link
with no record was deleted; a recomputed link that differs from the expected one was edited. Every
seal is a checkpoint: the recomputed link and count at its position must be what it recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain as concat
from typing import Any

from eventsourcing.application import Application

from application.audit_seals import ChainRead, SealRecord
from domain.audit_chain import CHAINED_APPLICATIONS, PULL_TOPIC, ChainHead, chained, empty_head, link_of

PAGE = 1000


@dataclass(frozen=True)
class Mismatch:
    application: str
    position: int
    event_id: str
    topic: str
    reason: str

    def as_dict(self) -> dict:
        return {"application": self.application, "position": self.position, "event_id": self.event_id,
                "topic": self.topic, "reason": self.reason}


@dataclass
class VerifyReport:
    checked: dict[str, int] = field(default_factory=dict)      # application -> links recomputed
    seals_checked: int = 0
    mismatch: Mismatch | None = None
    since: str | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "seals_checked": self.seals_checked, "since": self.since,
                "mismatch": self.mismatch.as_dict() if self.mismatch else None}


class UnknownSeal(LookupError):
    """`--since` names no seal in the Access log."""


# (position, event_id, topic, link hex) expected for one chained event
Expected = tuple[int, str, str, str]


def stored_records(app: Application, after: int) -> Iterator[Any]:
    """The application's chained notifications after `after`, straight from the event store."""
    topics = [PULL_TOPIC] if app.name == "Pulls" else []
    position = after
    while True:
        page = app.recorder.select_notifications(start=position, limit=PAGE, topics=topics, inclusive_of_start=False)
        for notification in page:
            if chained(app.name, notification.topic):
                yield notification
        if len(page) < PAGE:
            return
        position = page[-1].id


def view_links(chain: ChainRead, application: str, after: int) -> Iterator[Expected]:
    position = after
    while True:
        rows = chain.links(application, after=position, limit=PAGE)
        for row in rows:
            yield row.position, row.event_id, row.topic, row.link
        if len(rows) < PAGE:
            return
        position = rows[-1].position


class ArchivedChain:
    """What the archive holds of a chain: records and the links the segments recorded (none by default)."""

    def records(self, application: str, after: int) -> Iterable[Any]:
        return ()

    def expected(self, application: str, after: int) -> Iterable[Expected]:
        return ()

    def problem(self) -> Mismatch | None:
        """A segment that is missing, unreadable or not chained to its predecessor."""
        return None

    def last(self, application: str) -> int:
        """The last archived position of the application's log (0: none)."""
        return 0


def verify(apps: dict[str, Application], chain: ChainRead, seals: list[SealRecord], since: str | None = None,
           archive: ArchivedChain | None = None) -> VerifyReport:
    archive = archive or ArchivedChain()
    report = VerifyReport(since=since)
    start: dict[str, ChainHead] = {name: empty_head(name) for name in CHAINED_APPLICATIONS}
    if since is not None:
        trusted = next((s for s in seals if s.id == since), None)
        if trusted is None:
            raise UnknownSeal(f"no seal {since!r} in the audit log (entrepot audit seals lists them)")
        start.update({h.application: h for h in trusted.heads})
        seals = [s for s in seals if s.position > trusted.position]
    report.mismatch = archive.problem()
    for name in CHAINED_APPLICATIONS:
        if report.mismatch is not None:
            break
        checkpoints = {}
        for seal in seals:
            head = seal.head(name)
            if head is not None:
                checkpoints.setdefault(head.position, []).append((seal, head))
        report.mismatch = _walk(name, apps[name], chain, archive, start[name], checkpoints, report)
    return report


def _walk(name: str, app: Application, chain: ChainRead, archive: ArchivedChain, start: ChainHead,
          checkpoints: dict[int, list], report: VerifyReport) -> Mismatch | None:
    after = start.position
    # Up to the last archived position the archive speaks, after it the store and the view: a segment
    # written but not yet removed from the store (a killed round) is read once.
    archived = archive.last(name)
    records = iter(concat(archive.records(name, after), stored_records(app, max(after, archived))))
    expected = iter(concat(archive.expected(name, after), view_links(chain, name, max(after, archived))))
    projected_to = chain.head(name).position   # events above it are not in the view yet: nothing to compare
    link, count = bytes.fromhex(start.link), start.count
    record, want = next(records, None), next(expected, None)
    # Seals at the starting point (an empty chain, or the trusted seal's heads) are checked against it.
    if problem := _check(name, start.position, count, link, checkpoints, report, None):
        return problem
    while record is not None or want is not None:
        if want is not None and (record is None or want[0] < record.id):
            return Mismatch(name, want[0], want[1], want[2],
                            "in the chain but not in the event store: the event was deleted")
        position = record.id
        if want is None or record.id < want[0]:
            if position <= projected_to:
                return Mismatch(name, position, str(record.originator_id), record.topic,
                                "in the event store but not in the chain: the event was inserted or moved")
        link, count = link_of(link, name, record), count + 1
        if want is not None and want[0] == position:
            if want[3] != link.hex() or want[1] != str(record.originator_id):
                return Mismatch(name, position, str(record.originator_id), record.topic,
                                "the stored event does not match its link: it was edited")
            want = next(expected, None)
        report.checked[name] = report.checked.get(name, 0) + 1
        if problem := _check(name, position, count, link, checkpoints, report, record):
            return problem
        record = next(records, None)
    for position, pending in sorted(checkpoints.items()):
        seal = pending[0][0]
        return Mismatch(name, position, "", "", f"seal {seal.id} names position {position}, which is not in the "
                                                f"event store or the archive")
    return None


def _check(name: str, position: int, count: int, link: bytes, checkpoints: dict, report: VerifyReport,
           record: Any) -> Mismatch | None:
    for seal, head in checkpoints.pop(position, ()):
        report.seals_checked += 1
        if head.link != link.hex() or head.count != count:
            return Mismatch(name, position, str(record.originator_id) if record else "",
                            record.topic if record else "",
                            f"seal {seal.id} (at {seal.at:.0f}, by {seal.actor}) recorded head {head.link[:16]}… "
                            f"after {head.count} events; recomputed {link.hex()[:16]}… after {count}")
    return None
