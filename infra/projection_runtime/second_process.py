"""Part of a rebuild in a child process: some views replayed there, reading and decoding the logs themselves.

A rebuild is CPU bound in one Python process (the GIL): reading, decoding and every view's Python work
share one core. The views are independent of each other (each its own file on SQLite, its own copy and
switch on PostgreSQL), so a child process can rebuild some of them with the same functions while this
process rebuilds the rest: two cores at once, for the price of reading (and, unless the child's views
take stored notifications, decoding) the logs twice.

The child is started with `spawn` (no fork of a process that holds threads, pools or connections) and
opens its own applications and views. It reports what it replayed, or its error, through a pipe. It dies
with this process: Linux kills it when the thread that started it goes (PR_SET_PDEATHSIG), and a thread
of its own exits it once the pipe from this process breaks. A child killed midway leaves its views as
any killed rebuild leaves them: SQLite views hold what they wrote with its tracking, PostgreSQL copies
were never live (the next rebuild starts them over).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from projections.catalog import spec

# Views a second process takes, in order: the two that write a row per pull (their inserts and the chain's
# sequential links are the longest writes of a one-process rebuild, bench/results/2026-11-30-rebuild-s7.md),
# then the blobs view, which reads the Registry log there too. With the first two alone, the child of a 10M
# pass was done after ~500 s while this process went on alone for ~200 s more (py-spy: this process held the
# GIL 533 s, the child 275 s; blobs' gathering and writing ~75 s of this process's): bench/results/2026-12-01-rebuild-s14.md.
# The chain takes stored notifications: a child with it alone decodes nothing. Then the views that follow the
# Registry log alone (history, tags, manifests: a few statements per event each), which the child reads and
# decodes for blobs anyway: its part of a 10M pass ended minutes before this process's, which went on alone
# with idle CPU (bench/results/2026-12-02-rebuild-s18.md). Then the counters (Pulls alone, which the child
# decodes for audit and blobs): with the audit's indexes keyed by hashtext() the child's part ends sooner still,
# while this process went on with analytics, retention and counters: 1.14x at 10M pulls, two rounds
# (bench/results/2026-12-03-scale-rebuild-s24-child-counters-10m.md, -audit-keys-stats-s24.md).
CHILD_PREFERENCE = ("chain", "audit", "blobs", "history", "tags", "manifests", "counters")


class ChildRebuildFailed(RuntimeError):
    """The child process of a rebuild died or failed without a picklable error."""


def split(names: tuple[str, ...], archive: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(this process's views, the child's): the child takes CHILD_PREFERENCE's views that are rebuilt, up
    to one fewer than all of them. With an archive, only views that take none of it (the archive's
    reader is this process's: the child replays the event store alone)."""
    movable = [name for name in CHILD_PREFERENCE if name in names
               and (archive is None or not spec(name).sqlite_view.takes_archived)]
    child = tuple(movable[:len(names) - 1])
    return tuple(name for name in names if name not in child), child


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform tells it): with one, a second
    process would only add its own start and reading to the same core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def spare_core(load: float | None) -> bool:
    """Whether a second process would have a CPU of its own: more than one to use, and the 1-minute load
    average below `load` times their number (None: whatever the load)."""
    cpus = usable_cpus()
    if cpus < 2:
        return False
    return load is None or os.getloadavg()[0] < load * cpus


class ChildRebuild:
    """`rebuild(names, **kwargs)` of the given function in a spawned child, until `result()` is taken."""

    def __init__(self, rebuild: Callable[..., tuple[dict, dict]], names: tuple[str, ...], kwargs: dict) -> None:
        context = multiprocessing.get_context("spawn")
        self._results, results_end = context.Pipe(duplex=False)
        alive_end, self._alive = context.Pipe(duplex=False)
        self.process = context.Process(target=_run_child, args=(rebuild, names, kwargs, results_end, alive_end),
                                       name=f"rebuild-{'-'.join(names)}", daemon=True)
        self.process.start()
        results_end.close()   # this process keeps only its own ends: either side dying breaks the pipes
        alive_end.close()
        self._outcome: tuple | None = None   # what the child reported, once read

    def raise_if_failed(self) -> None:
        """Without waiting: raise the child's error, or ChildRebuildFailed if it died, once either happened
        (replay.STOP_CHECK, between this process's pages); nothing while it works or once it is done."""
        if self._outcome is None and self._results.poll():
            self._outcome = self._receive()
        if self._outcome is not None and self._outcome[0] == "error":
            raise self._outcome[1]

    def result(self) -> tuple[dict, dict]:
        """(replayed, seconds) of the child's rebuild; raises its error, or ChildRebuildFailed if it died."""
        outcome = self._outcome if self._outcome is not None else self._receive()
        self.process.join()
        if outcome[0] == "error":
            raise outcome[1]
        return outcome[1], outcome[2]

    def _receive(self) -> tuple:
        """The child's report; an error report of its own when it died without one (the pipe broke)."""
        try:
            return self._results.recv()
        except EOFError:
            self.process.join()
            return ("error", ChildRebuildFailed(f"the rebuild's child process ({self.process.name}) ended with "
                                                f"exit code {self.process.exitcode} before reporting"))

    def stop(self) -> None:
        """Kill the child (this process failed): its views are left as a killed rebuild leaves them."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def close(self) -> None:
        self._alive.close()
        self._results.close()


def _run_child(rebuild: Callable[..., tuple[dict, dict]], names: tuple[str, ...], kwargs: dict,
               results: Connection, alive: Connection) -> None:
    _die_with_parent(alive)
    try:
        replayed, seconds = rebuild(names, **kwargs)
        results.send(("done", replayed, seconds))
    except BaseException as error:   # reported to the parent, which raises it
        results.send(("error", _picklable(error)))
    finally:
        results.close()


def _picklable(error: BaseException) -> BaseException:
    """The error itself when it crosses the pipe intact, else one that carries its traceback."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return ChildRebuildFailed("".join(traceback.format_exception(error)))


def _die_with_parent(alive: Connection) -> None:
    if sys.platform.startswith("linux"):
        try:   # PR_SET_PDEATHSIG (1): SIGKILL as soon as the parent's starting thread ends, at the kernel's hand
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        try:
            alive.recv()   # nothing is ever sent: returns (EOFError) when the parent closes or dies
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="rebuild-parent-watch", daemon=True).start()
