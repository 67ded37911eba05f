"""A real nginx (Debian package) in front of an Entrepôt, run from the deployment's own config.

infra/deploy/nginx/nginx.conf is rendered with loopback values: its port, the Entrepôt it proxies to,
the blob directory it aliases and a private directory for what it writes. Each value replaced must
appear in the file, so the deployed config and what tests and benchmarks run cannot drift apart.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.support.processes import OnLoopback, stop_process
from tests.support.peers import on_a_free_port
from tests.support.registry import free_port

NGINX_BINARY = "nginx"
DEPLOYED_CONF = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "nginx" / "nginx.conf"
ACCEL_LOCATION = "/_entrepot/blobs/"     # [storage] accel_redirect of the deployed config


def render(entrepot: str, blobs_dir: Path, port: int, run_dir: Path) -> str:
    text = DEPLOYED_CONF.read_text()
    replacements = {   # in this order: the private directory first, the paths of the test after it
        "/tmp/": f"{run_dir}/",
        "server 127.0.0.1:5000;": f"server {entrepot};",
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "alias /var/lib/entrepot/storage/blobs/;": f"alias {blobs_dir}/;",
    }
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{DEPLOYED_CONF} no longer contains {old!r}: update tests/support/nginx.py")
        text = text.replace(old, new)
    # As root (tests, CI) the workers would switch to `nobody`, who cannot read Entrepôt's 0600 blob
    # files; deployed, nginx runs as Entrepôt's own uid and this line is not needed.
    return "user root;\n" + text


class Nginx(OnLoopback):
    """`nginx -g 'daemon off;'` on a loopback port in front of `entrepot` (host:port)."""

    def __init__(self, directory: Path, entrepot: str, blobs_dir: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.entrepot, self.blobs_dir = entrepot, Path(blobs_dir)
        self.config_path = self.directory / "nginx.conf"
        self.log_path = self.directory / "nginx.log"
        self.process: subprocess.Popen | None = None
        self._choose_port()

    def _choose_port(self) -> None:
        self.port = free_port()
        self.config_path.write_text(render(self.entrepot, self.blobs_dir, self.port, self.directory))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 15.0) -> Nginx:
        return on_a_free_port(lambda: self._start(timeout), self._choose_port)

    def _start(self, timeout: float) -> Nginx:
        with open(self.log_path, "ab") as log:
            log_offset = log.tell()
            self.process = subprocess.Popen(
                [NGINX_BINARY, "-p", str(self.directory), "-c", str(self.config_path), "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # This start's own lines: an earlier start's "Address already in use" must not make it retry.
                output = self.log_path.read_bytes()[log_offset:].decode(errors="replace")
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{output}")
            try:
                httpx.get(f"{self.url}/v2/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not answer within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)   # SIGTERM: nginx's fast shutdown, workers included

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
