"""A projection worker: one thread that follows one application's notification log into one view.

Our own small loop over the recorder's public methods (select_notifications, mapper.to_domain_event,
the view's max_tracking_id) instead of eventsourcing's ProjectionRunner, whose batching and error
reporting we could only reach through private attributes. Each page of notifications (up to
PAGE_SIZE) is written in one view transaction, tracked at the page's last notification id, so the
view stays exactly-once and keeps up with bursts: a backlog is drained a full page at a time.

An idle worker sleeps until a writer in this process commits to the log it follows (the app
recorders set a commit signal, infra/commit_signals.py; on PostgreSQL LISTEN/NOTIFY wakes it too).
It polls on its own only every IDLE_POLL seconds, for what other processes write: polling every few
milliseconds cost a warm pull 17 % of the server's CPU, most of it holding the GIL.

A worker woken again within GATHER seconds of its last read waits out the rest of GATHER first, so
that a burst of commits (a cold pull makes a dozen, each waking every worker of its log) is read as
one page: a lone commit after a quiet spell is still read at once, and no view lags a busy log by
more than GATHER plus a page's processing. Unless someone in this process is waiting for the views
(`HURRY`: a flush, a pin, a seal, a test): then a gathering worker reads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from infra.commit_signals import COMMITS, HURRY, log_of
from infra.projection_runtime.archived_pages import ArchivedRecords, archived_until, pages
from infra.projection_runtime.decoding import decoder_of
from infra.projection_runtime.page_reading import select_page
from infra.projection_runtime.failures import log_failure
from infra.projection_runtime.tail_reads import TAILS, TailPage
from projections.base import View, page_of

log = logging.getLogger(__name__)

PAGE_SIZE = 500
IDLE_POLL = 1.0   # seconds between polls of an idle log that no in-process commit signalled
NO_STOP = 2**63 - 1   # the largest notification id: a select with no upper bound
GATHER = 0.1   # seconds: commits arriving within this of a worker's last read are read together
ARCHIVE_COVER_POLL = 0.1   # seconds between looks at whether another worker has seeded the view from the archive


class ProjectionWorker:
    """Follows `app_class`'s events (every one, so that a caught-up view's position is the app's head) into `view`.

    The worker builds its own application instance (its own connections) and closes it when stopped.
    A crash is logged and then reported to `crashed`, in that order: whoever sees the error in a
    status may rely on the log line existing (a CI flake taught us).
    """

    def __init__(self, name: str, view: View, app_class: type[Application], env: dict, *,
                 crashed: Callable[[BaseException], None] | None = None, page_size: int = PAGE_SIZE,
                 archive: ArchivedRecords | None = None) -> None:
        self.name, self.view, self.page_size, self.archive = name, view, page_size, archive
        self.app = app_class(env=env)
        self.app_name = self.app.name
        self.log = log_of(self.app.recorder)
        # The mapper's decode, with msgspec's fast path for pull events (decoding.py): under warm load the
        # workers spent a third of their time in the mapper's JSON object hooks.
        self._decode = decoder_of(self.app)
        self.error: BaseException | None = None
        self._crashed = crashed
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._cut_short = threading.Event()   # ends a gathering wait: stopping, or someone waits for the views
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"projection-{name}-{self.app_name}")

    def start(self) -> ProjectionWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Another process recorded events (PostgreSQL NOTIFY): read now instead of after the idle delay."""
        COMMITS.announced(self.log)   # a shared tail page read before this is stale (tail_reads.py)
        self._wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the page in hand, stop, and close the worker's application."""
        self._stopping.set()
        self._wakeup.set()
        self._cut_short.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.app.close()

    @property
    def state(self) -> str:
        return "crashed" if self.error else "stopping" if self._stopping.is_set() else "running"

    def head(self) -> int:
        """The application's last notification id (0: none yet)."""
        return self.app.recorder.max_notification_id() or 0

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as error:
            log_failure(log, "projection %s crashed following %s; its status reports it", self.name, self.app_name,
                        error=error)
            self.error = error
            if self._crashed is not None:
                self._crashed(error)

    def _follow(self) -> None:
        log_name = self.log
        started = time.monotonic()   # no shared page read before this worker began (tail_reads.py)
        COMMITS.subscribe(log_name, self._wakeup)
        HURRY.subscribe(self._cut_short)
        try:
            position = self._archived_first(self.view.max_tracking_id(self.app_name) or 0)
            while not self._stopping.is_set():
                # Cleared before the read: a commit after this point sets it again, so none is missed.
                self._wakeup.clear()
                read_at = time.monotonic()
                # The log's other workers may have just read this page: taken from them (tail_reads.py).
                page = TAILS.read(log_name, self.app_name, self._select, position, self.page_size, since=started)
                if page:
                    self.view.process(self._page_of(page))
                    position = page.last_id
                    if len(page) == self.page_size:
                        continue   # a backlog: the next page at once
                if self._wakeup.wait(IDLE_POLL):
                    self._gather(read_at)
        finally:
            COMMITS.unsubscribe(log_name, self._wakeup)
            HURRY.unsubscribe(self._cut_short)

    def _select(self, start: int, limit: int) -> list:
        # The replay's page reader: on SQLite, plain tuple rows and the notifications built directly.
        return select_page(self.app.recorder, start, limit, stop=NO_STOP)

    def _page_of(self, page: TailPage) -> list:
        """The page as the view takes it (page_of), with the events decoded once for the log's workers."""
        if self.view.stored:
            return page_of(self.view, self.app, page.notifications)
        events = page.events(self._decode)
        return [(event, Tracking(self.app_name, n.id)) for event, n in zip(events, page.notifications)]

    def _gather(self, read_at: float) -> None:
        """Woken soon after the last read: let the burst's other commits land before reading them (GATHER)."""
        rest = read_at + GATHER - time.monotonic()
        if rest <= 0:
            return
        # Cleared before the checks: HURRY counts its waiter before it sets the event, so a waiter that
        # comes after the checks still ends the wait.
        self._cut_short.clear()
        if HURRY.waiting or self._stopping.is_set():
            return
        self._cut_short.wait(rest)

    def _archived_first(self, position: int) -> int:
        """A view starting below the archive (new, or emptied by a schema change) takes the archived events
        first, as a rebuild does (archived_pages.py); a caught-up view never is below it (archiving waits
        for every view following Pulls). Returns the position to follow the store from."""
        if self.archive is None:
            return position
        if not self.view.takes_archived:
            self._wait_for_archive_cover(position)
            return position
        last = archived_until(self.archive, self.app)
        for page, _ in pages(self.app, self.archive, position, self.page_size, last):
            if self._stopping.is_set():
                break
            self.view.process(page_of(self.view, self.app, page))
            position = page[-1].id
        return position

    def _wait_for_archive_cover(self, position: int) -> None:
        """A view that goes on from the archive's end without taking the archived events (the chain, seeded by
        its Access worker) must not read the store's first events before it knows that end: a new or emptied
        view's Access worker may not have caught up yet. A caught-up view is past the archive: no wait."""
        covered = self.view.archive_covered(self.app_name)
        if covered is None:
            return
        last = archived_until(self.archive, self.app)
        while position < last and covered < last and not self._stopping.is_set():
            self._wakeup.wait(ARCHIVE_COVER_POLL)
            self._wakeup.clear()
            covered = self.view.archive_covered(self.app_name) or 0
