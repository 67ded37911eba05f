"""Small helpers for the real processes and threads tests start."""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor


def stop_process(process: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds; a finished process is left alone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def concurrently(*calls):
    """Run the calls in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class OnLoopback:
    """A server the tests started on 127.0.0.1:`port`: its base URL and its host as references name it."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as image references, skopeo and registries.conf want it."""
        return f"127.0.0.1:{self.port}"
