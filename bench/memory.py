"""Peak resident memory of a server while clients pull a big layer cold (VmRSS sampled, VmHWM reset)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from bench.images import BenchImage
from bench.measure import MeasurementFailed, curl, platform_manifest
from bench.targets import Target


def _tree(pid: int) -> list[int]:
    """pid and its descendants (a server with worker processes counts whole), from /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += parents.get(current, [])
    return pids


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak resident memory of a process tree while the block runs: VmRSS sampled every 20 ms, and
    VmHWM after resetting it (clear_refs 5, root only) at the start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        pids, listed = [self.pid], 0.0
        while not self._stop.is_set():
            if time.monotonic() - listed > 1.0:  # listing /proc costs more than reading a few status files
                pids, listed = _tree(self.pid), time.monotonic()
            self.peak_kib = max(self.peak_kib, sum(_status_kib(p, "VmRSS") for p in pids))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            pass
        self.start_kib = sum(_status_kib(p, "VmRSS") for p in _tree(self.pid))
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()
        if self.hwm_reset:
            self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmHWM"))

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def cold_blob_memory(target: Target, image: BenchImage, clients: int) -> dict:
    """Peak RSS of the server while `clients` clients pull the image's largest layer cold at once."""
    layer = image.largest_layer
    with httpx.Client(timeout=120) as http:
        platform_manifest(http, target, image)  # as a client would, before its blobs
    if target.upstream:
        target.upstream.mark()
    url = target.blob_url(image.repository, layer.digest)
    args = ["-Z", "--parallel-max", str(clients)]
    for _ in range(clients):
        args += ["-o", "/dev/null", url]
    with PeakMemory(target.pid) as memory:
        start = time.monotonic()
        got = curl(*args, timeout=1800)
        wall = time.monotonic() - start
    if got != [(200, layer.size)] * clients:
        raise MeasurementFailed(f"{target.name}: {clients} cold pulls of {layer.digest} answered {got}")
    result = {"peak_rss_mib": memory.peak_mib, "rss_before_mib": memory.start_kib / 1024, "seconds": wall,
              "mib_s": clients * layer.size / wall / 2**20, "layer_bytes": layer.size}
    if target.upstream:
        target.upstream.settle()
        result["upstream_ratio"] = target.upstream.sent()["bytes"] / layer.size
    return result
