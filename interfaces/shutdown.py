"""A deadline on shutdown: after SIGTERM the process ends even when a call it waits for (a database, a disk) hangs."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

GRACE_SECONDS = 20.0   # in-flight requests, the last pulls and the projections get this long to finish


class ShutdownDeadline:
    """Armed by the first stop signal; if the process is still alive `grace` seconds later, it exits with 1."""

    def __init__(self, grace: float = GRACE_SECONDS, exit: Callable[[int], None] = os._exit) -> None:
        self._grace = grace
        self._exit = exit
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self._grace, self._expire)
            self._timer.daemon = True   # it must not itself keep the process alive
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        # os._exit: a normal exit would wait for the very threads that hang (interpreter shutdown joins them).
        log.error("shutdown did not finish within %g s (a call is hung); exiting now", self._grace)
        sys.stderr.flush()
        self._exit(1)
