"""In-process workers for the embedded mode (one per projection and app), and the runners chosen by backend."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from infra.projection_runtime.archived_pages import ArchivedRecords
from infra.projection_runtime.locked import LockedRunners
from infra.projection_runtime.opening import application_classes, is_postgres, open_view
from infra.projection_runtime.progress import ProjectionCrashed, ProjectionStatus, wait_for
from infra.projection_runtime.failures import log_failure
from infra.projection_runtime.workers import ProjectionWorker
from projections.catalog import PROJECTION_NAMES, spec

log = logging.getLogger(__name__)


class ProjectionRunners:
    """Starts, watches and stops the workers of the named projections (all by default).

    Only one process may run a given projection at a time (STACK-NOTES P6): a second worker
    of the same view would fail on tracking IntegrityErrors.
    """

    def __init__(self, env: dict[str, str], names: Iterable[str] = PROJECTION_NAMES,
                 archive: ArchivedRecords | None = None) -> None:
        self._env = dict(env)
        self._archive = archive   # a view emptied by a schema change replays the archived pulls first
        self._names = tuple(names)
        for name in self._names:
            spec(name)  # fail on an unknown name before any thread starts
        self._workers: dict[tuple[str, str], ProjectionWorker] = {}
        self._errors: dict[tuple[str, str], BaseException] = {}

    def start(self) -> ProjectionRunners:
        """Each worker resumes after its view's tracking position, so a restart catches up."""
        try:
            for name in self._names:
                for app_class in application_classes(name):
                    # One view per worker: on SQLite each holds its own connection to the view's file.
                    view = open_view(name, self._env)
                    key = (name, app_class.name)
                    try:
                        worker = ProjectionWorker(name, view, app_class, self._env, archive=self._archive,
                                                  crashed=lambda error, key=key: self._crashed(key, error))
                    except BaseException:
                        view.close()
                        raise
                    self._workers[key] = worker
                    worker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _crashed(self, key: tuple[str, str], error: BaseException) -> None:
        self._errors[key] = error

    def stop(self) -> None:
        """Stops every worker and waits for its thread; errors are logged, not raised."""
        for key, worker in self._workers.items():
            try:
                worker.stop()
            except BaseException as error:
                self._errors.setdefault(key, error)
                log_failure(log, "projection %s (%s) failed", key[0], key[1], error=error)
            finally:
                worker.view.close()
        self._workers.clear()

    def __enter__(self) -> ProjectionRunners:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def errors(self) -> dict[tuple[str, str], BaseException]:
        """(projection, application) -> the error that crashed it."""
        return dict(self._errors)

    def status(self) -> list[ProjectionStatus]:
        out = []
        for (name, app_name), worker in self._workers.items():
            error = self._errors.get((name, app_name))
            state = "crashed" if error is not None else worker.state
            out.append(ProjectionStatus.measure(name, app_name, worker.view, worker.app.recorder, state,
                                                repr(error) if error else None))
        return out

    def wait_caught_up(self, timeout: float = 10.0, interval: float = 0.005) -> None:
        """Block until every view has processed its apps' current max notification id.

        Raises ProjectionCrashed at once if a worker has crashed, TimeoutError after `timeout`.
        """
        def check() -> None:
            for key, error in self._errors.items():
                raise ProjectionCrashed(f"projection {key[0]} crashed following {key[1]}: {error!r}") from error

        pairs = [(worker.view, app_name, worker.head()) for (_, app_name), worker in self._workers.items()]
        wait_for(pairs, timeout, interval, check)


def projection_runners(env: dict[str, str], in_process: bool = True,
                       archive: ArchivedRecords | None = None) -> ProjectionRunners | LockedRunners:
    """The runners `entrepot serve` starts: all of them on SQLite; on PostgreSQL those no other process
    runs (advisory locks), or none when `in_process` is False (`entrepot projections run` runs them).
    `archive`: the archived pulls, for views that (re)start below the archive's last position."""
    if not is_postgres(env):
        return ProjectionRunners(env, archive=archive)
    return LockedRunners(env, PROJECTION_NAMES if in_process else (), archive=archive)
