"""A rebuild split over two processes (second_process.py): the child's views and this process's equal the
live runners' on SQLite and PostgreSQL; a child killed midway fails the rebuild and leaves views that
recover; a parent killed midway takes its child with it."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.projection_runtime import status
from infra.projection_runtime.opening import is_postgres
from infra.projection_runtime.rebuild import rebuild_many
from infra.projection_runtime import second_process
from infra.projection_runtime.second_process import ChildRebuild, ChildRebuildFailed, split
from tests.integration.test_bulk_rebuild import VIEWS, built_live, dumps, index_names, write_history

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The module (the package's `rebuild` is the function of that name).
rebuild_module = importlib.import_module("infra.projection_runtime.rebuild")


@pytest.fixture
def env(env_factory):
    return env_factory("main")


def test_the_child_takes_the_chain_audit_blobs_and_counters_and_never_every_view():
    assert split(VIEWS, None) == (("retention", "analytics"), ("chain", "audit", "blobs", "counters"))
    assert split(("chain", "audit"), None) == (("audit",), ("chain",))
    assert split(("chain",), None) == (("chain",), ())
    assert split(("counters", "blobs"), None) == (("counters",), ("blobs",))
    assert split(("retention", "analytics"), None) == (("retention", "analytics"), ())
    # With an archive the child replays the event store alone: only views that take none of the archive.
    assert split(("counters", "audit"), object()) == (("counters",), ("audit",))
    assert split(("counters", "blobs", "audit"), object()) == (("counters", "blobs"), ("audit",))


def test_then_the_child_takes_the_views_of_the_registry_log_alone():
    names = (*VIEWS, "tags", "history", "manifests", "orgs", "referrers")
    assert split(names, None) == (("retention", "analytics", "orgs", "referrers"),
                                  ("chain", "audit", "blobs", "history", "tags", "manifests", "counters"))
    assert split(("tags", "manifests"), None) == (("manifests",), ("tags",))


def test_registry_views_rebuilt_in_the_child_are_the_live_runners(env, monkeypatch):
    names = (*VIEWS, "history", "tags", "manifests", "orgs")
    write_history(env)
    live = built_live(env, names)
    assert live["tags"]["tags"] and live["manifests"]["manifests"] and live["history"]["tag_history"]
    children = []

    class Counted(ChildRebuild):
        def __init__(self, rebuild, there, kwargs):
            super().__init__(rebuild, there, kwargs)
            children.append(there)

    monkeypatch.setattr(rebuild_module, "ChildRebuild", Counted)
    rebuild_many(names, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=None)
    assert children == [("chain", "audit", "blobs", "history", "tags", "manifests", "counters")]
    assert dumps(env, names) == live


def test_a_rebuild_split_over_two_processes_writes_what_the_live_runners_wrote(env, monkeypatch):
    write_history(env)
    live = built_live(env)
    indexes = index_names(env)
    children = []

    class Counted(ChildRebuild):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            children.append(self.process)

    monkeypatch.setattr(rebuild_module, "ChildRebuild", Counted)
    seconds: dict[str, float] = {}
    replayed = rebuild_many(VIEWS, env, page_size=7, seconds=seconds, bulk_events=20, child_events=0, child_on_postgres=True,
                            child_load=None)
    assert [child.exitcode for child in children] == [0]
    assert replayed["audit"] == {"Pulls": 120} and replayed["chain"]["Pulls"] == 120
    assert set(seconds) == set(VIEWS)
    assert dumps(env) == live
    assert index_names(env) == indexes
    assert all(s.lag == 0 for s in status(env) if s.projection in VIEWS)
    # Below REBUILD_CHILD_EVENTS no child is started, and the views are the same again.
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20)
    assert len(children) == 1
    assert dumps(env) == live
    # Nor with one CPU to run on, or none to spare, whatever the events.
    monkeypatch.setattr(second_process, "usable_cpus", lambda: 1)
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=None)
    monkeypatch.setattr(second_process, "usable_cpus", lambda: 2)
    monkeypatch.setattr(second_process.os, "getloadavg", lambda: (2.5, 2.0, 2.0))
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=1.0)
    assert len(children) == 1
    assert dumps(env) == live
    monkeypatch.setattr(second_process.os, "getloadavg", lambda: (1.5, 2.0, 2.0))
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=1.0)
    assert len(children) == 2
    assert dumps(env) == live
    # By default both backends' rebuilds split (REBUILD_CHILD_ON_POSTGRES); asked not to, PostgreSQL's does not.
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_load=1.0)
    assert len(children) == 3
    assert dumps(env) == live
    rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_load=1.0, child_on_postgres=False)
    assert len(children) == (4 if not is_postgres(env) else 3)
    assert dumps(env) == live


# Run as a file: a spawned child runs it again as __mp_main__, so the patch below applies in the child too.
KILLED = """
import importlib, json, os, signal, sys, multiprocessing, time
from infra.projection_runtime import bulk
rebuild = importlib.import_module("infra.projection_runtime.rebuild")
from infra.projection_runtime.rebuild import rebuild_many
from infra.projection_runtime.second_process import ChildRebuildFailed

VICTIM = os.environ["REBUILD_VICTIM"]   # "child" or "parent"
writes = 0
write = bulk.Gathering.write

WRITING = os.environ["REBUILD_CHILD_PID"] + ".writing"   # the child has begun writing its views


def write_then_die(self, *args, **kwargs):
    global writes
    write(self, *args, **kwargs)
    writes += 1
    in_child = multiprocessing.parent_process() is not None   # not yet known while the child imports this file
    if VICTIM == "parent" and in_child:
        open(WRITING, "w").close()
        time.sleep(3)   # a child that would outlive its parent by far, were it not killed with it
    if writes == 2 and (VICTIM == "child") == in_child:   # some gatherings written, not all: killed midway
        while VICTIM == "parent" and not os.path.exists(WRITING):
            time.sleep(0.05)   # the parent dies once its child is at work, not while it starts
        os.kill(os.getpid(), signal.SIGKILL)

bulk.Gathering.write = write_then_die

class Noted(rebuild.ChildRebuild):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with open(os.environ["REBUILD_CHILD_PID"], "w") as out:
            out.write(str(self.process.pid))

rebuild.ChildRebuild = Noted

if __name__ == "__main__":
    try:
        rebuild_many(tuple(sys.argv[1].split(",")), json.loads(os.environ["REBUILD_ENV"]), page_size=7,
                     bulk_events=20, child_events=0, child_on_postgres=True, child_load=None)
    except ChildRebuildFailed as error:
        print(error)
        sys.exit(3)
"""


def killed_rebuild(env: dict, victim: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int]:
    script, pid_file = tmp_path / "killed_rebuild.py", tmp_path / "child.pid"
    script.write_text(KILLED)
    # Output to files, not pipes: reading a pipe to its end would wait for the child too, which holds it.
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        done = subprocess.run([sys.executable, str(script), ",".join(VIEWS)], cwd=ROOT, timeout=180, stdout=out,
                              stderr=err, env={**os.environ, "REBUILD_ENV": json.dumps(env), "REBUILD_VICTIM": victim,
                                               "REBUILD_CHILD_PID": str(pid_file), "PYTHONPATH": str(ROOT)})
    done.stdout, done.stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    return done, int(pid_file.read_text())


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether the process has ended (reaped, or a zombie waiting for its new parent) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def recovers(env: dict, live: dict, indexes: dict) -> None:
    """A killed rebuild's views: PostgreSQL's live copies are whole (the copies being built were never live,
    or were switched to whole) and the next rebuild starts over; SQLite's runners go on from each view's
    tracking, its next opening making the dropped indexes again."""
    if is_postgres(env):
        assert dumps(env) == live
        rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=None)
    else:
        assert dumps(env) != live
        assert built_live(env) == live
    assert dumps(env) == live
    assert index_names(env) == indexes


def test_a_child_killed_midway_fails_the_rebuild_and_leaves_views_that_recover(env, tmp_path):
    write_history(env)
    live = built_live(env)
    indexes = index_names(env)
    done, child = killed_rebuild(env, "child", tmp_path)
    assert done.returncode == 3, done.stderr
    assert "exit code -9" in done.stdout
    assert gone(child)
    recovers(env, live, indexes)


def test_a_parent_killed_midway_takes_its_child_with_it(env, tmp_path):
    write_history(env)
    live = built_live(env)
    indexes = index_names(env)
    done, child = killed_rebuild(env, "parent", tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert gone(child, timeout=5)   # alone, its slowed writes would take 15 s more
    recovers(env, live, indexes)


def failing(names: tuple[str, ...], how: str) -> tuple[dict, dict]:
    """A child's rebuild that fails: with an error that pickles, or with one that does not."""
    if how == "plain":
        raise ValueError(f"cannot rebuild {names}")
    raise ValueError(lambda: names)   # a lambda does not pickle


def test_an_error_in_the_child_is_raised_by_the_parent():
    child = ChildRebuild(failing, ("chain",), {"how": "plain"})
    try:
        with pytest.raises(ValueError, match=r"cannot rebuild \('chain',\)"):
            child.result()
    finally:
        child.close()
    assert child.process.exitcode == 0
    child = ChildRebuild(failing, ("chain",), {"how": "unpicklable"})
    try:
        with pytest.raises(ChildRebuildFailed, match="ValueError"):
            child.result()
    finally:
        child.close()


def sleeping(names: tuple[str, ...]) -> tuple[dict, dict]:
    time.sleep(60)   # killed before
    return {}, {}


def raised(check, timeout: float = 30.0) -> BaseException:
    """What `check()` raises within `timeout` (it returns nothing while the child works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            check()
        except BaseException as error:   # the child's error, as the parent raises it
            return error
        time.sleep(0.02)
    raise AssertionError("the child's failure was never seen")


def test_a_failed_or_dead_child_is_seen_without_waiting_for_its_result():
    child = ChildRebuild(failing, ("chain",), {"how": "plain"})
    try:
        assert isinstance(raised(child.raise_if_failed), ValueError)
        with pytest.raises(ValueError, match=r"cannot rebuild \('chain',\)"):
            child.result()   # the same error, read once
    finally:
        child.close()
    child = ChildRebuild(sleeping, ("chain",), {})
    try:
        child.raise_if_failed()   # at work: nothing to say
        os.kill(child.process.pid, signal.SIGKILL)
        error = raised(child.raise_if_failed)
        assert isinstance(error, ChildRebuildFailed) and "exit code -9" in str(error)
    finally:
        child.close()


def test_the_parent_stops_at_its_next_page_once_its_child_has_failed(env, monkeypatch):
    """Its part would be thrown away at the end: on 10M pulls, an hour of it (session 9)."""
    write_history(env)

    class FailedChild:
        checks = 0

        def __init__(self, *_args) -> None:
            pass

        def raise_if_failed(self) -> None:
            FailedChild.checks += 1
            raise ChildRebuildFailed("the child's database went away")

        def stop(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(rebuild_module, "ChildRebuild", FailedChild)
    with pytest.raises(ChildRebuildFailed, match="went away"):
        rebuild_many(VIEWS, env, page_size=7, bulk_events=20, child_events=0, child_on_postgres=True, child_load=None)
    assert FailedChild.checks == 1   # at the parent's first page, not after all of them
