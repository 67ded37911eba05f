"""In-process runners for the embedded mode (one per projection and app), and the runners chosen by backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from eventsourcing.projection import ProjectionRunner

from projections.batching import BatchingProjectionRunner

from projections.catalog import PROJECTION_NAMES, is_postgres, spec, view_class
from projections.guarded import GuardedRunners
from projections.progress import ProjectionCrashed, ProjectionStatus, wait_for
from projections.watching import watch

log = logging.getLogger(__name__)


class ProjectionRunners:
    """Starts, watches and stops the runners of the named projections (all by default).

    Only one process may run a given projection at a time (STACK-NOTES P6): a second runner
    of the same view would fail on tracking IntegrityErrors.
    """

    def __init__(self, env: dict[str, str], names: Iterable[str] = PROJECTION_NAMES) -> None:
        self._env = dict(env)
        self._names = tuple(names)
        for name in self._names:
            spec(name)  # fail on an unknown name before any thread starts
        self._runners: dict[tuple[str, str], ProjectionRunner] = {}
        self._errors: dict[tuple[str, str], BaseException] = {}
        self._watchers: list[threading.Thread] = []

    def start(self) -> ProjectionRunners:
        """Each runner resumes after its view's tracking position, so a restart catches up."""
        try:
            for name in self._names:
                for app_class in spec(name).applications:
                    runner = BatchingProjectionRunner(application_class=app_class,
                                                      projection_class=spec(name).projection,
                                                      view_class=view_class(name, self._env), env=self._env)
                    runner.__enter__()  # enters the subscription, so that stop() can exit it
                    key = (name, runner.app_name)
                    self._runners[key] = runner
                    self._watchers.append(watch(runner, name, lambda error, key=key: self._crashed(key, error)))
        except BaseException:
            self.stop()
            raise
        return self

    def _crashed(self, key: tuple[str, str], error: BaseException) -> None:
        self._errors[key] = error

    def stop(self) -> None:
        """Stops every runner and waits for its threads; errors are logged, not raised."""
        for key, runner in self._runners.items():
            try:
                runner.__exit__(None, None, None)  # stop, join threads, close the runner's app
            except BaseException as error:
                self._errors.setdefault(key, error)
                log.error("projection %s (%s) failed", key[0], key[1], exc_info=error)
            finally:
                runner.view.close()
        for watcher in self._watchers:
            watcher.join(timeout=5)
        self._runners.clear()
        self._watchers.clear()

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
        for (name, app_name), runner in self._runners.items():
            error = self._errors.get((name, app_name))
            if error is not None:
                state = "crashed"
            elif runner.is_interrupted.is_set():
                state = "stopping"
            else:
                state = "running"
            out.append(ProjectionStatus.measure(name, app_name, runner.view, runner.app.recorder, state,
                                                repr(error) if error else None))
        return out

    def wait_caught_up(self, timeout: float = 10.0, interval: float = 0.005) -> None:
        """Block until every view has processed its apps' current max notification id.

        Raises ProjectionCrashed at once if a runner has crashed, TimeoutError after `timeout`.
        """
        def check() -> None:
            for key, error in self._errors.items():
                raise ProjectionCrashed(f"projection {key[0]} crashed following {key[1]}: {error!r}") from error

        pairs = [(runner.view, app_name, runner.app.recorder.max_notification_id() or 0)
                 for (_, app_name), runner in self._runners.items()]
        wait_for(pairs, timeout, interval, check)


def projection_runners(env: dict[str, str], in_process: bool = True) -> ProjectionRunners | GuardedRunners:
    """The runners `entrepot serve` starts: all of them on SQLite; on PostgreSQL those no other process
    runs (advisory locks), or none when `in_process` is False (`entrepot projections run` runs them)."""
    if not is_postgres(env):
        return ProjectionRunners(env)
    return GuardedRunners(env, PROJECTION_NAMES if in_process else ())
