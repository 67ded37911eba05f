"""A real small filesystem for tests of a full disk: a tmpfs, else a loop-mounted ext4 image."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.components import unavailable


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@contextmanager
def small_disk(directory: Path, size_mib: int) -> Iterator[Path]:
    """`directory` as the mount point of a filesystem of `size_mib` MiB, unmounted afterwards.
    Mounting needs root: without it the test is skipped (or fails under ENTREPOT_REQUIRE_COMPONENTS=1)."""
    directory.mkdir(parents=True, exist_ok=True)
    tried = _run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(directory))
    if tried.returncode != 0:
        image = directory.parent / f"{directory.name}.img"
        with open(image, "wb") as file:
            file.truncate(size_mib * 1024 * 1024)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image)) if shutil.which("mkfs.ext4") else None
        looped = _run("mount", "-o", "loop", str(image), str(directory)) if made and made.returncode == 0 else None
        if looped is None or looped.returncode != 0:
            unavailable(f"cannot mount a small filesystem at {directory}: tmpfs: {tried.stderr.strip()}; "
                        f"loop: {(looped or made).stderr.strip() if (looped or made) else 'no mkfs.ext4'}")
    try:
        yield directory
    finally:
        if _run("umount", str(directory)).returncode != 0:
            _run("umount", "-l", str(directory))   # a process still holding a file: detach now, free later


def fill_up(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until the filesystem has no room left; returns its path."""
    path = directory / name
    block = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as file:
        try:
            while True:
                file.write(block)
        except OSError:
            pass
        try:   # the last partial block too, so that not even a page is left
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
    return path


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize
