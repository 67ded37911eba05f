"""Persistence wiring for the embedded mode: one SQLite file per application and per view, polled subscriptions."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription, Subscription
from eventsourcing.sqlite import SQLiteApplicationRecorder

from projections.catalog import PROJECTION_NAMES

APPLICATION_NAMES = ("Registry", "Pulls")


class _PollingSubscription(ListenNotifySubscription):
    """SQLite has no LISTEN/NOTIFY: wake the pull loop every `interval` seconds instead (STACK-NOTES §2.5)."""

    def __init__(self, recorder, gt: int | None = None, topics: Sequence[str] = (), interval: float = 0.05) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        # Daemon: it only sets an Event, and it ends within one interval of stop().
        threading.Thread(target=self._tick, args=(interval,), daemon=True, name="sqlite-poll").start()

    def _tick(self, interval: float) -> None:
        while not self._has_been_stopped:
            time.sleep(interval)
            self._has_been_notified.set()


class PollingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """The stock SQLite recorder raises NotImplementedError in subscribe(), so ProjectionRunner cannot follow it."""

    poll_interval = 0.05  # lag of the embedded views is about this much

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return _PollingSubscription(self, gt=gt, topics=topics, interval=self.poll_interval)


POLLING_RECORDER_TOPIC = f"{__name__}:{PollingSQLiteApplicationRecorder.__qualname__}"


def embedded_env(data_dir: str | Path) -> dict[str, str]:
    """The eventsourcing environment of the embedded mode; creates `data_dir/views/` if missing.

    No unprefixed SQLITE_DBNAME on purpose: an app or view without its own key fails loudly
    instead of sharing a file (SQLite table names are fixed, STACK-NOTES P3).
    """
    root = Path(data_dir).absolute()
    (root / "views").mkdir(parents=True, exist_ok=True)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite"}
    for app in APPLICATION_NAMES:
        env[f"{app.upper()}_SQLITE_DBNAME"] = str(root / f"{app.lower()}.db")
        env[f"{app.upper()}_APPLICATION_RECORDER_TOPIC"] = POLLING_RECORDER_TOPIC
    for name in PROJECTION_NAMES:
        env[f"{name.upper()}_SQLITE_DBNAME"] = str(root / "views" / f"{name}.db")
    return env
