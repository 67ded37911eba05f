"""Real S3 (moto_server) and Redis peers on loopback, and their pytest fixtures (registered in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
from redis.connection import parse_url

from infra.storage.s3 import s3_client
from tests.support.components import require, require_service
from tests.support.registry import free_port
from tests.support.processes import stop_process

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
REDIS_SERVER = "redis-server"
SHARED_REDIS_URL = os.environ.get("ENTREPOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# moto accepts any credentials; boto3 only needs some, from the standard environment variables.
S3_ENV = {"AWS_ACCESS_KEY_ID": "entrepot-test", "AWS_SECRET_ACCESS_KEY": "entrepot-test",
          "AWS_DEFAULT_REGION": "us-east-1"}


def _wait(process: subprocess.Popen, ready, what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not start within {timeout}s:\n{log.read_text(errors='replace')[-2000:]}")


T = TypeVar("T")

# What a server's log says when free_port()'s guess was taken by another process before the server bound it.
PORT_TAKEN = ("Address already in use", "address already in use", "Errno 98")


def on_a_free_port(start_once: Callable[[], T], choose_port: Callable[[], None], attempts: int = 3) -> T:
    """start_once(), again on another port (choose_port()) while the server exits because its port was taken:
    free_port() only guesses, and with tests running in parallel another process may bind the port between
    the guess and the server's own bind."""
    for attempt in range(attempts):
        try:
            return start_once()
        except RuntimeError as error:
            if attempt == attempts - 1 or not any(text in str(error) for text in PORT_TAKEN):
                raise
            choose_port()
    raise AssertionError("unreachable")


def _stop(process: subprocess.Popen | None) -> None:
    stop_process(process)


class MotoS3:
    """`moto_server` on a free loopback port: the real S3 HTTP protocol, multipart and presigned GETs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self._choose_port()

    def _choose_port(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        return on_a_free_port(self._start, self._choose_port)

    def _start(self) -> MotoS3:
        log = self.directory / "moto.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)], cwd=self.directory,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(self.process, lambda: httpx.get(self.endpoint_url + "/moto-api/", timeout=1).status_code < 500,
              "moto_server", log)
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def client(self):
        return s3_client(self.endpoint_url)

    def new_bucket(self) -> str:
        name = f"entrepot-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def uploads(self, bucket: str) -> list[dict]:
        """Multipart uploads in progress (never completed nor aborted)."""
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def keys(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


class PrivateRedis:
    """A redis-server of our own, which a test may kill and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self._started = False
        self._choose_port()

    def _choose_port(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        if self._started:   # started again after a kill: on the same port, as a restarted Redis would be
            return self._start()
        started = on_a_free_port(self._start, self._choose_port)
        self._started = True
        return started

    def _start(self) -> PrivateRedis:
        log = self.directory / "redis.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(self.process, lambda: redis.Redis.from_url(self.url, socket_timeout=1).ping(), "redis-server", log)
        return self

    def kill(self) -> None:
        """As a crash would: SIGKILL, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


class TinyProxy:
    """tinyproxy (Debian package): a real forward HTTP proxy, as a company's egress proxy; its log says what it carried."""

    BINARY = "tinyproxy"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log_path = directory / "tinyproxy.out"   # in the foreground, with no LogFile, it logs to stdout
        self.process: subprocess.Popen | None = None
        self._choose_port()

    def _choose_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> TinyProxy:
        require(self.BINARY)
        return on_a_free_port(self._start, self._choose_port)

    def _start(self) -> TinyProxy:
        config = self.directory / "tinyproxy.conf"
        # As root it drops to User/Group after opening its port; its stdout is our file, opened before.
        config.write_text(f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\n"
                          "LogLevel Info\nUser nobody\nGroup nogroup\nConnectPort 443\n")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen([self.BINARY, "-d", "-c", str(config)], stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(self.process, lambda: httpx.get(f"{self.url}/", timeout=1).status_code > 0, "tinyproxy", self.log_path)
        return self

    def requests(self) -> list[str]:
        """The request lines the proxy carried, e.g. 'GET http://127.0.0.1:5000/v2/ HTTP/1.1'."""
        if not self.log_path.exists():
            return []
        return [line.split("): ", 1)[1] for line in self.log_path.read_text(errors="replace").splitlines()
                if "Request (file descriptor" in line and "): " in line]

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[MotoS3]:
    require(MOTO_SERVER)
    saved = {name: os.environ.get(name) for name in S3_ENV}
    for name, value in S3_ENV.items():
        os.environ.setdefault(name, value)
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


@pytest.fixture
def s3_bucket(moto_s3) -> str:
    """A new, empty bucket on the shared moto server."""
    return moto_s3.new_bucket()


@pytest.fixture
def shared_redis_url() -> str:
    """The machine's Redis (CI starts it); keys of each test live under their own prefix (see redis_prefix)."""
    url = parse_url(SHARED_REDIS_URL)
    require_service("Redis", url.get("host", "127.0.0.1"), int(url.get("port", 6379)),
                    "start it, or point ENTREPOT_TEST_REDIS_URL at one")
    return SHARED_REDIS_URL


@pytest.fixture
def redis_prefix(shared_redis_url) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"entrepot-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(shared_redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def private_redis(tmp_path_factory) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, so that the test may kill it (never the shared one)."""
    require(REDIS_SERVER)
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()

