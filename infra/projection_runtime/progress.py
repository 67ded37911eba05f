"""How far each view has got: positions, lag against the event store, and waiting until caught up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, TrackingRecorder

from infra.commit_signals import HURRY
from infra.projection_runtime import locks
from infra.projection_runtime.opening import application_classes, is_postgres, open_view
from projections.base import View
from projections.catalog import PROJECTION_NAMES


class ProjectionCrashed(RuntimeError):
    """A runner stopped because its projection raised; the original error is the __cause__."""


@dataclass(frozen=True)
class ProjectionStatus:
    projection: str
    application: str
    position: int               # the view's max tracking id for this application (0: nothing yet)
    max_notification_id: int    # the application's last notification (0: no events)
    lag: int                    # notifications not yet processed
    state: str                  # running | stopping | crashed (runners); running | stopped (status())
    error: str | None = None

    @classmethod
    def measure(cls, name: str, app_name: str, view: TrackingRecorder, recorder: ApplicationRecorder,
                state: str, error: str | None = None) -> ProjectionStatus:
        # Read the app first: the view can only have moved on since, so lag is never negative.
        head = recorder.max_notification_id() or 0
        position = position_of(view, app_name)
        return cls(name, app_name, position, head, max(head - position, 0), state, error)


def position_of(view: TrackingRecorder, app_name: str) -> int:
    return view.max_tracking_id(app_name) or 0


def wait_for(targets: Sequence[tuple[TrackingRecorder, str, int]], timeout: float, interval: float,
             check: Callable[[], None] = lambda: None) -> None:
    """Poll max_tracking_id until each (view, app name, target id) is reached.

    Short fixed sleeps, not TrackingRecorder.wait(), whose 100-800 ms backoff (STACK-NOTES P4)
    would dominate tests and rebuilds that are caught up within milliseconds.
    """
    with HURRY:   # this process's gathering workers read now (infra/commit_signals.py)
        _poll(list(targets), time.monotonic() + timeout, timeout, interval, check)


def _poll(pending: list[tuple[TrackingRecorder, str, int]], deadline: float, timeout: float, interval: float,
          check: Callable[[], None]) -> None:
    while True:
        check()
        pending = [(view, app, target) for view, app, target in pending if position_of(view, app) < target]
        if not pending:
            return
        if time.monotonic() > deadline:
            late = ", ".join(f"{app} {position_of(view, app)}/{target}" for view, app, target in pending)
            raise TimeoutError(f"views not caught up after {timeout}s: {late}")
        time.sleep(interval)


@contextmanager
def _opened(env: dict, names: Iterable[str]) -> Iterator[list[tuple[str, View, Application]]]:
    """(projection name, view, app) for each pair, all closed on exit."""
    with ExitStack() as stack:
        apps: dict[type, Application] = {}
        pairs = []
        for name in names:
            view = open_view(name, env)
            stack.callback(view.close)
            for app_class in application_classes(name):
                if app_class not in apps:
                    apps[app_class] = app_class(env=env)
                    stack.callback(apps[app_class].close)
                pairs.append((name, view, apps[app_class]))
        yield pairs


def status(env: dict, names: Iterable[str] = PROJECTION_NAMES, serving: bool = False) -> list[ProjectionStatus]:
    """Positions and lag read from the views, and whether some process runs each projection.

    On PostgreSQL: running while a process holds the projection's advisory lock, else stopped.
    On SQLite the projections run inside the server: `serving` (a server holds the data directory).
    """
    names = tuple(names)
    if is_postgres(env):
        held = locks.holders(env, names)
        states = {name: "running" if name in held else "stopped" for name in names}
    else:
        states = dict.fromkeys(names, "running" if serving else "stopped")
    with _opened(env, names) as pairs:
        return [ProjectionStatus.measure(name, app.name, view, app.recorder, states[name])
                for name, view, app in pairs]


def wait_caught_up(env: dict, names: Iterable[str] = PROJECTION_NAMES, timeout: float = 10.0,
                   interval: float = 0.005) -> None:
    """Block until the views (run elsewhere) reach each app's max notification id as of this call."""
    with _opened(env, names) as pairs:
        targets = [(view, app.name, app.recorder.max_notification_id() or 0) for _, view, app in pairs]
        wait_for(targets, timeout, interval)
