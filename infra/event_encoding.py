"""The Pulls application's mapper: pull events encoded with msgspec, byte for byte what the library writes.

Every pull is one `Pull.Recorded`, and under warm load encoding them was a tenth of the server's GIL time
(bench.profile manifest-by-tag): eventsourcing's JSONTranscoder runs Python's json encoder, whose
`default` hook is called for the timestamp. A pull's state is flat (strings, numbers, one datetime), so
here it is encoded by msgspec (already a dependency, for settings) with the timestamp turned into the
transcoder's `{"_type_": "datetime_iso", "_data_": ...}` first and the float `at` written as Python's own
repr. The bytes are the library's, field for field (tests/unit/test_event_encoding.py), so the audit
chain's hashes, the decoders and older readers see no difference.

Anything the fast path cannot vouch for goes to the library's mapper: another event class, a mapper with
a cipher or compressor or another transcoder, a string that is not printable (the two encoders escape
control characters differently), a float that is not finite, a value of any other type.

Wired by the composition's environment (`PULLS_MAPPER_TOPIC`, infra/persistence.py), so the application
layer does not know about it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import Cipher, Compressor, DatetimeAsISO, JSONTranscoder, Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.pull import Pull

_encode = msgspec.json.Encoder().encode
_float_repr = float.__repr__


class PullMapper(Mapper):
    def __init__(self, transcoder: Transcoder, compressor: Compressor | None = None,
                 cipher: Cipher | None = None) -> None:
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        # Only the stored format the fast path reproduces: plain JSON bytes whose datetimes are ISO strings.
        self._fast = (compressor is None and cipher is None and type(transcoder) is JSONTranscoder
                      and type(transcoder.types.get(datetime)) is DatetimeAsISO)
        self._topic = get_topic(Pull.Recorded)
        self._class_version = getattr(Pull.Recorded, "class_version", 1)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if self._fast and type(domain_event) is Pull.Recorded:
            state = dict(vars(domain_event))
            originator_id = state.pop("originator_id")
            originator_version = state.pop("originator_version")
            if self._class_version > 1:
                state["class_version"] = self._class_version
            encoded = _encoded_flat(state)
            if encoded is not None:
                return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                                   topic=self._topic, state=encoded)
        return super().to_stored_event(domain_event)


def _encoded_flat(state: dict[str, Any]) -> bytes | None:
    """What JSONTranscoder.encode(state) returns, or None when this state is not one we can vouch for."""
    for key, value in state.items():
        kind = type(value)
        if kind is str:
            if not value.isprintable():
                return None
        elif kind is float:
            if not math.isfinite(value):
                return None
            state[key] = msgspec.Raw(_float_repr(value).encode())   # json writes float.__repr__
        elif kind is datetime:
            state[key] = {"_type_": "datetime_iso", "_data_": value.isoformat()}
        elif kind is not int and kind is not bool and value is not None:
            return None
    return _encode(state)
