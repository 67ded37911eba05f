"""The Pull aggregate: one per manifest GET, served or failed, for the audit log and hit-rate metrics."""

from __future__ import annotations

import enum
import os
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic


class PullResult(str, enum.Enum):
    HIT = "hit"                  # served from the cache with no upstream contact
    MISS = "miss"                # fetched from upstream
    STALE = "stale"              # served from the cache because upstream failed
    REVALIDATED = "revalidated"  # upstream confirmed the cached digest (HEAD)
    ERROR = "error"              # answered with an error: nothing was served
    DENIED = "denied"            # refused: access control (failed authentication included), the org's
                                 # allow/deny lists or the pull-through mode; `note` says why


class Pull(Aggregate):
    """A fresh id per pull and exactly one event: no version contention on the hot path."""

    class Recorded(Aggregate.Created):
        # Version 1 had no note, 2 added it, 3 added status and error_code, 4 the actor. Events stored before
        # versions were recorded carry no version at all (the library reads that as 1), including
        # some written with a note, so the upcasts only fill in what is missing. 5 added the org's generation.
        class_version = 5

        org: str
        repository: str
        reference: str
        digest: str
        result: str
        client: str
        user_agent: str
        at: float
        note: str         # a stale serve: the upstream problem behind it; an error: the message answered
        status: int       # the HTTP status answered
        error_code: str   # the OCI error code answered (MANIFEST_UNKNOWN, TOOMANYREQUESTS, ...); "" unless an error
        actor: str        # who pulled: "anonymous", a robot or org admin (<org>+<name>), "admin"; never a secret
        generation: int   # which org of that name (domain.org.CacheOrg.Recreated): its counters are its own

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state.setdefault("note", "")

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state.setdefault("status", 200)     # every pull recorded before errors were audited was a 200
            state.setdefault("error_code", "")

        @staticmethod
        def upcast_v3_v4(state: dict) -> None:
            state.setdefault("actor", "anonymous")   # every pull before access control was anonymous

        @staticmethod
        def upcast_v4_v5(state: dict) -> None:
            state.setdefault("generation", 1)   # before generations, every org was the first of its name

    @event(Recorded)
    def __init__(self, org: str, repository: str, reference: str, digest: str, result: str,
                 client: str, user_agent: str, at: float, note: str = "", status: int = 200,
                 error_code: str = "", actor: str = "anonymous", generation: int = 1) -> None:
        self.org, self.repository, self.reference, self.digest = org, repository, reference, digest
        self.result, self.client, self.user_agent, self.at, self.note = result, client, user_agent, at, note
        self.status, self.error_code, self.actor, self.generation = status, error_code, actor, generation

    @classmethod
    def recorded(cls, org: str, repository: str, reference: str, digest: str, result: str, client: str,
                 user_agent: str, at: float, note: str = "", status: int = 200, error_code: str = "",
                 actor: str = "anonymous", generation: int = 1) -> Pull.Recorded:
        """The one event of a new Pull, made without building the aggregate: the event `Pull(...)` would
        collect (same topic, fresh id, version 1). The request path only writes pulls, and building each
        Pull to collect its event cost a warm pull ~8 % of its CPU; the repository still loads a Pull from it."""
        return cls.Recorded(originator_topic=_PULL_TOPIC, originator_id=fresh_id(at), originator_version=cls.INITIAL_VERSION,
                            timestamp=cls.Recorded.create_timestamp(), org=org, repository=repository,
                            reference=reference, digest=digest, result=result, client=client, user_agent=user_agent,
                            at=at, note=note, status=status, error_code=error_code, actor=actor,
                            generation=generation)


_PULL_TOPIC = get_topic(Pull)

# Time-ordered ids (UUID version 7, RFC 9562): the pull's time in milliseconds, then 74 random bits. The
# event store's key is (originator_id, version): random (version 4) ids landed each insert on a random leaf
# of that index, which at millions of pulls is a page read and a page written per pull (SQLite, 10M pulls:
# ~30 us more CPU per insert than at the index's right edge, where ids in time order land; PostgreSQL writes
# a full page image per leaf first touched after a checkpoint). The random bits are drawn IDS_PER_DRAW at a
# time from one os.urandom call: uuid4() asked the kernel for 16 bytes per pull, and every such call let go
# of the GIL, so on a busy server the request waited for the projection threads to hand it back.
IDS_PER_DRAW = 256
_RANDOM_BITS = 74
_fresh: list[int] = []


def fresh_id(at: float) -> UUID:
    """A new UUID (version 7) for a pull at `at` (seconds since the epoch). list.pop is atomic, so threads
    never share random bits; a refill that races another only draws a few more."""
    try:
        bits = _fresh.pop()
    except IndexError:
        drawn = os.urandom(10 * IDS_PER_DRAW)   # 80 bits each, 74 used
        _fresh.extend(int.from_bytes(drawn[i:i + 10], "big") >> 6 for i in range(0, len(drawn), 10))
        bits = _fresh.pop()
    millis = max(0, int(at * 1000)) & ((1 << 48) - 1)
    # 48 bits of time | version 7 | 12 random bits | variant 0b10 | 62 random bits
    return UUID(int=(millis << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & ((1 << 62) - 1)))


# A forked child must not hand out the ids its parent drew too.
os.register_at_fork(after_in_child=_fresh.clear)
