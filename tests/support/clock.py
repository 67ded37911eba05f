"""A clock tests move forward instead of sleeping, injected through bootstrap(clock=...)."""

from __future__ import annotations

import threading
import time


class ManualClock:
    """Real time plus what the test advanced: staleness and back-off pass at once, while code that
    also measures real time (timeouts, the event loop) still sees time go on. Thread-safe: the server
    reads it on its own threads while the test advances it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skew = 0.0

    def now(self) -> float:
        with self._lock:
            return time.time() + self._skew

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._skew += seconds
