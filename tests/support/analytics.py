"""A scripted pull workload with known hits, misses and bytes, and the same figures read from /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.images import Image


def pull_image(url: str, org: str, repository: str, tag: str, image: Image) -> int:
    """One manifest GET by tag and one GET per blob, as skopeo pulls; the bytes received."""
    received = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        manifest = http.get(f"/v2/{org}/{repository}/manifests/{tag}", headers={"Accept": image.media_type})
        manifest.raise_for_status()
        received += len(manifest.content)
        for digest in image.blobs:
            blob = http.get(f"/v2/{org}/{repository}/blobs/{digest}")
            blob.raise_for_status()
            received += len(blob.content)
    return received


def from_metrics(url: str, org: str) -> dict:
    """What this process's /metrics counted for `org`: manifest pulls by result, bytes served and fetched."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pulls: dict[str, int] = {}
    served = fetched = fills = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("org") != org or not sample.name.endswith("_total"):
                continue
            if sample.name == "entrepot_manifest_pulls_total":
                pulls[sample.labels["result"]] = int(sample.value)
            elif sample.name == "entrepot_served_bytes_total":
                served += int(sample.value)
            elif sample.name == "entrepot_upstream_fetched_bytes_total":
                fetched += int(sample.value)
            elif sample.name == "entrepot_fills_completed_total":
                fills += int(sample.value)
    return {"pulls": pulls, "bytes_served": served, "bytes_from_upstream": fetched, "fills": fills}


def wait_until(read: Callable[[], dict], done: Callable[[dict], bool], timeout: float = 20.0) -> dict:
    """read() until done(answer) (the projections and the traffic recorder trail the requests)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = read()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)
