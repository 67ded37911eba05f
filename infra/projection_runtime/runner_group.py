"""The workers of one projection at one version of its PostgreSQL view, started and stopped together."""

from __future__ import annotations

import logging
import time

from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.opening import application_classes, open_view
from infra.projection_runtime.progress import ProjectionStatus
from infra.projection_runtime.failures import log_failure
from infra.projection_runtime.workers import ProjectionWorker
from projections.postgres_view import PostgresView

log = logging.getLogger(__name__)


class RunnerGroup:
    """The workers of one projection at one version (one per application it follows), sharing one view."""

    def __init__(self, name: str, version: int | None, env: dict, runner_env: dict,
                 archive: ArchivedRecords | None = None) -> None:
        self.name = name
        self.view = open_view(name, env, version=version, follow_live=False)
        assert isinstance(self.view, PostgresView)
        self.version = self.view.version
        self.workers: dict[str, ProjectionWorker] = {}
        self.errors: dict[str, BaseException] = {}
        self.crashed_at: float | None = None
        try:
            for app_class in application_classes(name):
                worker = ProjectionWorker(name, self.view, app_class, runner_env, archive=archive,
                                          crashed=lambda error, app=app_class.name: self._crashed(app, error))
                self.workers[worker.app_name] = worker
                worker.start()
        except BaseException:
            self.stop()
            raise

    def _crashed(self, app_name: str, error: BaseException) -> None:
        self.errors[app_name] = error
        self.crashed_at = self.crashed_at or time.monotonic()

    def wake(self, channel: str) -> None:
        """The application writing to NOTIFY `channel` recorded events: its worker polls now."""
        for worker in self.workers.values():
            if getattr(worker.app.recorder, "channel_name", None) == channel:
                worker.wake()

    def stop(self) -> None:
        for app_name, worker in self.workers.items():
            try:
                worker.stop()  # join its thread, close its app
            except BaseException as error:
                self.errors.setdefault(app_name, error)
                log_failure(log, "projection %s (%s) failed", self.name, app_name, error=error)
        self.view.close()

    def status(self) -> list[ProjectionStatus]:
        out = []
        for app_name, worker in self.workers.items():
            error = self.errors.get(app_name)
            state = "crashed" if error else worker.state
            out.append(ProjectionStatus.measure(self.name, app_name, self.view, worker.app.recorder, state,
                                                repr(error) if error else None))
        return out
