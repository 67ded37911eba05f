"""A runner's `run_forever()` in a watcher thread, so that a crashed projection is logged and reported."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("projections.runners")


class Runner(Protocol):
    app_name: str

    def run_forever(self) -> None: ...


def watch(runner: Runner, projection: str, crashed: Callable[[BaseException], None]) -> threading.Thread:
    """Start a daemon thread around runner.run_forever(), which returns when the runner is stopped
    and re-raises its processing thread's error. The crash is logged before `crashed` records it:
    whoever sees the error in a status may rely on the log line existing (a CI flake taught us)."""

    def run() -> None:
        try:
            runner.run_forever()
        except BaseException as error:
            log.error("projection %s crashed following %s; its status reports it", projection, runner.app_name,
                      exc_info=error)
            crashed(error)

    watcher = threading.Thread(target=run, daemon=True, name=f"projection-{projection}-{runner.app_name}")
    watcher.start()
    return watcher
