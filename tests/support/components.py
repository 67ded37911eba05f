"""Real components the integration and end-to-end tests drive: skip locally when one is missing, fail in CI."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

REQUIRE_ENV = "ENTREPOT_REQUIRE_COMPONENTS"

PACKAGES = {
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
    "skopeo": "skopeo",
    "podman": "podman",
    "containerd": "containerd",
    "ctr": "containerd",
    "umoci": "umoci",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "tinyproxy": "tinyproxy",
    "nginx": "nginx",
}


def missing(*binaries: str) -> list[str]:
    """The binaries of `binaries` that are not on PATH (or, for absolute paths, not executable)."""
    absent = []
    for binary in binaries:
        if os.path.isabs(binary):
            if not os.access(binary, os.X_OK):
                absent.append(binary)
        elif shutil.which(binary) is None:
            absent.append(binary)
    return absent


def require(*binaries: str) -> None:
    """Skip the test when a binary is missing; fail instead when $ENTREPOT_REQUIRE_COMPONENTS=1 (CI)."""
    absent = missing(*binaries)
    if not absent:
        return
    packages = sorted({PACKAGES.get(os.path.basename(b), os.path.basename(b)) for b in absent})
    unavailable(f"missing component(s): {', '.join(absent)} (apt-get install -y {' '.join(packages)})")


def require_service(name: str, host: str, port: int, hint: str = "") -> None:
    """Skip unless something accepts connections on host:port; fail instead when $ENTREPOT_REQUIRE_COMPONENTS=1."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        unavailable(f"{name} is not reachable on {host}:{port} ({error}){'; ' + hint if hint else ''}")


def unavailable(message: str) -> None:
    """Skip with `message`, or fail with it in CI."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
    pytest.skip(message)
