"""The data directory's server lock: `entrepot serve` holds it shared; an in-place rebuild needs it alone.

A lock file with `fcntl.flock`, not a pid file: the kernel drops the lock when its process ends, also on
SIGKILL, so a crashed server never leaves the data directory locked. Several servers may share one
data directory (replicas on PostgreSQL), so they hold it shared; a SQLite rebuild, which rewrites a view
in place, takes it exclusive and is refused while any server holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = "serve.lock"


class DataDirUnusable(Exception):
    """The data directory is missing, or another process holds it; the message is the one line the CLI prints."""


def existing(data_dir: str | Path) -> Path:
    """The data directory of a command that inspects or rebuilds it: it must exist (no new empty one)."""
    path = Path(data_dir).absolute()
    if not path.is_dir():
        raise DataDirUnusable(f"no data directory at {path} (pass --data-dir or --config, or run "
                              "`entrepot serve` there first)")
    return path


def hold_for_serving(data_dir: str | Path) -> IO:
    """Hold the lock shared for as long as the returned file stays open (the life of `entrepot serve`)."""
    file = _open(data_dir)
    try:
        fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise DataDirUnusable(f"{data_dir} is being rebuilt (`entrepot projections rebuild`): start the "
                              "server once it has finished") from None
    return file


def in_use_by_a_server(data_dir: str | Path) -> bool:
    """Whether some `entrepot serve` holds the data directory now."""
    if not (Path(data_dir) / LOCK_FILE).exists():
        return False
    with _open(data_dir) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False   # closing the file released the probe's lock


@contextmanager
def held_alone(data_dir: str | Path) -> Iterator[None]:
    """No server runs on the data directory meanwhile: refused if one does; one started meanwhile is refused."""
    with _open(data_dir) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirUnusable(f"a server is running on {data_dir}: stop it first (the rebuild works "
                                  "in place on SQLite)") from None
        yield


def _open(data_dir: str | Path) -> IO:
    # 0600 like the rest of the private data directory; the file holds nothing, only the lock.
    fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    return os.fdopen(fd, "r+")
