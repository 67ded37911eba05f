"""A real distribution registry (`docker-registry serve`) on a loopback port, with its access log parsed."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
from tests.support.processes import OnLoopback, stop_process

REGISTRY_BINARY = "/usr/bin/docker-registry"

# The combined-format line distribution writes after each response, e.g.
# 127.0.0.1 - - [27/Nov/2026:23:33:01 +0000] "GET /v2/foo/manifests/latest HTTP/1.1" 404 96 "" "curl/7.88.1"
ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) ')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UpstreamRegistry(OnLoopback):
    """One registry process in `directory`; stop() and start() again keep its port and storage."""

    def __init__(self, directory: Path | str, auth: tuple[str, str] | None = None, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.port = port or free_port()
        self.log_path = self.directory / "registry.log"
        self.config_path = self.directory / "config.yml"
        self.process: subprocess.Popen | None = None
        self._mark = 0
        self._write_config()

    def _write_config(self) -> None:
        auth = ""
        if self.auth:
            htpasswd = subprocess.run(["htpasswd", "-Bbn", *self.auth], check=True, capture_output=True, text=True)
            (self.directory / "htpasswd").write_text(htpasswd.stdout)
            auth = f"auth:\n  htpasswd:\n    realm: entrepot-test\n    path: {self.directory / 'htpasswd'}\n"
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.directory / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: entrepot-test-secret\n"
            + auth
        )

    def start(self, timeout: float = 10.0) -> UpstreamRegistry:
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.directory,
            )
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # With htpasswd auth on, a 401 means the server is up and answering.
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url} within {timeout}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _read_settled_log(self) -> str:
        # The access line is written just after the response, so a client may see the answer first.
        size = -1
        for _ in range(20):
            current = self.log_path.stat().st_size if self.log_path.exists() else 0
            if current == size:
                break
            size = current
            time.sleep(0.03)
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self, since_mark: bool = True) -> list[tuple[str, str, int]]:
        """(method, uri, status) of every request answered, oldest first; by default only since mark()."""
        found = []
        for line in self._read_settled_log().splitlines():
            match = ACCESS_LINE.match(line)
            if match:
                found.append((match["method"], match["uri"], int(match["status"])))
        return found[self._mark:] if since_mark else found

    def mark(self) -> None:
        """Forget the requests seen so far: later requests() and count() only see newer ones."""
        self._mark = len(self.requests(since_mark=False))

    def count(self, method: str, path_substring: str = "", status: int | None = None) -> int:
        return sum(
            1 for m, uri, code in self.requests()
            if m == method.upper() and path_substring in uri and (status is None or code == status)
        )

    def __enter__(self) -> UpstreamRegistry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
