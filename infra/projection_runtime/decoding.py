"""Decoding a page of notifications into domain events, with a fast path for the pull events (issue 14).

A rebuild spends a large share of its time in eventsourcing's `Mapper.to_domain_event`: the JSON
transcoder calls a Python object hook for every JSON object (each event's state and its timestamp),
resolves the topic, looks up the id convertor and builds the event. Pull events are nearly all of
a large log and their state is flat (strings and numbers, one timestamp), so for them this module
reads the state with msgspec's JSON parser, with no object hook, and turns the one `{"_type_": "datetime_iso", ...}`
object into a datetime itself; then it does what the mapper does (id and version from the row, the
class's upcasts from the stored class_version, the event built without calling its __init__), so the
event is the mapper's, field for field (tests/integration/test_fast_decode.py compares them on every stored
version of Pull.Recorded).

Anything else goes to the mapper: other topics, a mapper with a cipher or compressor or another
transcoder, and any pull state that is not flat (a value that the object hook would have turned into
something, i.e. any JSON object besides the timestamp).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, find_id_convertor
from eventsourcing.utils import get_topic

from domain.pull import Pull

# Event classes whose stored state is flat apart from the timestamp (checked per event anyway).
FAST_EVENTS: tuple[type, ...] = (Pull.Recorded,)
# The value types a flat state holds once its timestamp is decoded: anything else means the object
# hook would have had work to do, and the mapper decodes that event.
_FLAT = frozenset({str, int, float, bool, type(None), datetime})
_fromisoformat = datetime.fromisoformat
# msgspec's JSON parser (already a dependency, for settings) builds the same dict as the json module's
# for these states, in about half the time; untyped, it yields str, int, float, bool, None, list, dict.
_loads = msgspec.json.Decoder().decode


class PageDecoder:
    """Decodes notifications of one application's log: `decode(n)` for one, `page(ns)` for a page."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self._fast: dict[str, type] = {}
        transcoder = mapper.transcoder
        # Only the stored format the fast path knows: plain JSON bytes whose datetimes are ISO strings.
        if (mapper.cipher is None and mapper.compressor is None and type(transcoder) is JSONTranscoder
                and type(transcoder.names.get("datetime_iso")) is DatetimeAsISO):
            self._fast = {get_topic(cls): cls for cls in FAST_EVENTS}

    @property
    def fast(self) -> bool:
        """Whether this log's format allows the fast path at all."""
        return bool(self._fast)

    def decode(self, notification: Any) -> Any:
        cls = self._fast.get(notification.topic)
        if cls is not None:
            event = _decode_flat(cls, notification)
            if event is not None:
                return event
        return self.mapper.to_domain_event(notification)

    def page(self, notifications: Sequence[Any]) -> list[Any]:
        decode = self.decode
        return [decode(n) for n in notifications]


def decoder_of(app: Any) -> Callable[[Any], Any]:
    """The decode function for an application's notifications (what `app.mapper.to_domain_event` gives)."""
    return PageDecoder(app.mapper).decode


def _decode_flat(cls: type, notification: Any) -> Any | None:
    """The event as Mapper.to_domain_event builds it, or None when the state is not flat."""
    try:
        state = _loads(notification.state)
        stamp = state["timestamp"]
        if type(stamp) is not dict or len(stamp) != 2 or stamp.get("_type_") != "datetime_iso":
            return None
        state["timestamp"] = _fromisoformat(stamp["_data_"])
    except (msgspec.MsgspecError, ValueError, KeyError, TypeError):
        return None   # the mapper raises its own error for it, or decodes it its way
    if not _FLAT.issuperset(map(type, state.values())):
        return None
    # As the mapper does: id and version from the row, then the upcasts from the stored version.
    state["originator_id"] = find_id_convertor(cls, type(notification.originator_id))(notification.originator_id)
    state["originator_version"] = notification.originator_version
    version = state.pop("class_version", 1)
    target = getattr(cls, "class_version", 1)
    while version < target:
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event
