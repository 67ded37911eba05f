"""An in-process Entrepôt with quotas, on a ManualClock, pulled with skopeo: what the retention tests share."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import httpx

from domain.manifest import DOCKER_MANIFEST, OCI_MANIFEST
from tests.support.clients import DirImage, skopeo_copy
from tests.support.clock import ManualClock
from tests.support.images import Image, build_image
from tests.support.inprocess import InProcessServer

REPO = "library/app"


def three_images(seed: str) -> dict[str, Image]:
    """Three images of about the same size, tags 1, 2, 3."""
    return {tag: build_image(f"{seed}-{tag}", layers=2, layer_size=40_000) for tag in ("1", "2", "3")}


def http_pull(base_url: str, tag: str) -> dict[str, str]:
    """A client pull: the manifest by tag, then every blob; digest -> sha256 of what was received."""
    with httpx.Client(base_url=f"{base_url}/v2/hub/{REPO}", timeout=60) as client:
        manifest = client.get(f"/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST})
        manifest.raise_for_status()
        document = json.loads(manifest.content)
        received = {}
        for digest in [document["config"]["digest"], *[layer["digest"] for layer in document["layers"]]]:
            response = client.get(f"/blobs/{digest}")
            response.raise_for_status()
            received[digest] = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return received


def until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def image_bytes(image: Image) -> int:
    return len(image.manifest_bytes) + sum(len(data) for data in image.blobs.values())


class Cache:
    """An in-process Entrepôt on a ManualClock in front of `upstream`, with the org(s) under test."""

    def __init__(self, server: InProcessServer, clock: ManualClock, workdir: Path) -> None:
        self.server, self.clock, self.workdir = server, clock, workdir
        self.container = server.container
        self.retention = self.container.read_views["retention"]
        self._pulls = 0

    def pull(self, tag: str, org: str = "hub", repository: str = REPO) -> DirImage:
        self._pulls += 1
        destination = self.workdir / f"pull-{self._pulls}"
        skopeo_copy(f"docker://127.0.0.1:{self.server.port}/{org}/{repository}:{tag}", destination)
        return DirImage.read(destination)

    def x_cache(self, tag: str, org: str = "hub", repository: str = REPO) -> str:
        response = httpx.get(f"{self.server.url}/v2/{org}/{repository}/manifests/{tag}", timeout=30,
                             headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
        assert response.status_code == 200, response.text
        return response.headers["X-Cache"]

    def settle(self) -> None:
        """Every view caught up with the pulls so far (they gather commits for up to 0.1 s), then evictor
        rounds until one has nothing left to do (what the background task does after each fill)."""
        self.container.runners.wait_caught_up(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lock = self.container.evictions.lock
            if lock.acquire():
                try:
                    report = asyncio.run(self.container.evictor.run_once())
                finally:
                    lock.release()
                if not report.skipped and not report.evicted and not report.deleted:
                    return
            time.sleep(0.05)
        raise AssertionError("the evictor did not settle")

    def held(self, org: str = "hub") -> set[str]:
        return {image.digest for image in self.retention.ranking(org, "lru", limit=100, victims_only=False)}

    def api(self, method: str, path: str, **options) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}/api/v1{path}", timeout=30,
                             headers={"Authorization": f"Bearer {self.container.admin_token}"}, **options)

    def stored(self, digest: str) -> bool:
        return asyncio.run(self.container.store.stat(digest)) is not None


