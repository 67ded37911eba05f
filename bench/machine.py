"""What the numbers depend on: the machine, its load, and the versions of everything measured."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _first_match(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else text.splitlines()[0] if text else ""


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def scheduled(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(seconds run on a CPU, seconds waited runnable for one) so far, of thread `tid` of `pid`, or of all
    its threads summed (/proc/PID/task/TID/schedstat). On a loaded machine the wait is what the load
    adds to a process's own work: a thread woken by a packet waits its turn before it runs."""
    run = wait = 0
    tasks = [tid] if tid is not None else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for task in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        except OSError:   # a thread that ended meanwhile
            continue
        run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def machine() -> dict:
    cpu = _first_match(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = _first_match(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    return {"host": platform.node(), "cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "mem_total_mib": int(mem) // 1024 if mem.isdigit() else None}


def versions(cold_client: str) -> dict:
    def package(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    found = {
        "python": sys.version.split()[0],
        "distribution": _first_match(r"(\d+\.\d+\.\d+\S*)", _run("docker-registry", "--version")),
        "wrk": _first_match(r"wrk (\S+)", _run("wrk", "-v")),
        "curl": _first_match(r"curl (\S+)", _run("curl", "--version")),
        "entrepot_commit": _run("git", "rev-parse", "--short", "HEAD"),
        "entrepot_worktree_dirty": bool(_run("git", "status", "--porcelain", "--untracked-files=no")),
    }
    if cold_client == "skopeo":
        found["skopeo"] = _first_match(r"version (\S+)", _run("skopeo", "--version"))
    for name in ("litestar", "uvicorn", "granian", "httpx", "eventsourcing", "psycopg"):
        found[name] = package(name)
    return found


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def wait_idle(pids: list[int], busy_below: float = 0.15, window: float = 0.3, timeout: float = 60.0) -> float:
    """Wait until every process uses under `busy_below` of a core over `window` seconds; returns the wait.

    A cache that still works off the last load (Entrepôt's projections catching up with the pulls
    it recorded) would otherwise slow the next target's measurement.
    """
    tick = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    before = {pid: _cpu_ticks(pid) for pid in pids}
    while time.monotonic() - start < timeout:
        time.sleep(window)
        after = {pid: _cpu_ticks(pid) for pid in pids}
        if all((after[pid] - before[pid]) / tick < busy_below * window for pid in pids):
            return time.monotonic() - start
        before = after
    return time.monotonic() - start


def warm_memory(mib: int) -> None:
    """Touch `mib` MiB of fresh memory, then give it back: the next pages the kernel hands out (a cache's
    new page-cache pages, its buffers) are ones the hypervisor already backs.

    On this machine kind (a Firecracker VM with free page reporting: /sys/module/page_reporting) the
    guest's free memory is handed back to the host, and the first write to such a page costs a host
    fault: writing 28 MiB into new files cost 7-8 ms of CPU in warm memory and 90-110 ms in cold memory
    (bench/results/2026-11-30-cold-s10.md). A long-running host's memory is all in use and its new pages
    are recycled ones; a pull straight from a registry writes no page at all, a cache writes every byte it
    stores. Warming before each pull (outside the timed part) models the long-running host."""
    if mib <= 0:
        return
    block = bytearray(mib * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    del block
