"""The runners of one projection at one version of its PostgreSQL view, started and stopped together."""

from __future__ import annotations

import logging
import threading
import time

from eventsourcing.projection import BaseProjectionRunner

from projections.batching import BatchingBaseProjectionRunner

from projections.catalog import open_view, spec
from projections.postgres_view import PostgresView
from projections.progress import ProjectionStatus
from projections.watching import watch

log = logging.getLogger(__name__)


class RunnerGroup:
    """The runners of one projection at one version (one per application it follows), sharing one view."""

    def __init__(self, name: str, version: int | None, env: dict, runner_env: dict) -> None:
        self.name = name
        self.view = open_view(name, env, version=version, follow_live=False)
        assert isinstance(self.view, PostgresView)
        self.version = self.view.version
        self.runners: dict[str, BaseProjectionRunner] = {}
        self.errors: dict[str, BaseException] = {}
        self.crashed_at: float | None = None
        self._watchers: list[threading.Thread] = []
        try:
            for app_class in spec(name).applications:
                runner = BatchingBaseProjectionRunner(projection=spec(name).projection(self.view), application_class=app_class,
                                              tracking_recorder=self.view, topics=(), env=runner_env)
                runner.__enter__()  # enters the subscription, so that __exit__ can leave it
                self.runners[runner.app_name] = runner
                self._watchers.append(watch(runner, name, lambda error, app=runner.app_name: self._crashed(app, error)))
        except BaseException:
            self.stop()
            raise

    def _crashed(self, app_name: str, error: BaseException) -> None:
        self.errors[app_name] = error
        self.crashed_at = self.crashed_at or time.monotonic()

    def stop(self) -> None:
        for app_name, runner in self.runners.items():
            try:
                runner.__exit__(None, None, None)  # stop, join its threads, close its app
            except BaseException as error:
                self.errors.setdefault(app_name, error)
                log.error("projection %s (%s) failed", self.name, app_name, exc_info=error)
        for watcher in self._watchers:
            watcher.join(timeout=5)
        self.view.close()

    def status(self) -> list[ProjectionStatus]:
        out = []
        for app_name, runner in self.runners.items():
            error = self.errors.get(app_name)
            state = "crashed" if error else "stopping" if runner.is_interrupted.is_set() else "running"
            out.append(ProjectionStatus.measure(self.name, app_name, self.view, runner.app.recorder, state,
                                                repr(error) if error else None))
        return out
