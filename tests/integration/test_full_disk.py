"""A full disk (a real 40 MiB filesystem, a 60 MiB image): every pull is still served, never a 500, and reported."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.images import build_image, push_image
from tests.support.server import EntrepotServer
from tests.support.small_disk import fill_up, free_bytes, small_disk

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
STORAGE = {"min_free_bytes": 2 * MiB, "low_free_bytes": 24 * MiB}


@pytest.fixture(scope="module")
def image():
    return build_image("full-disk", layers=3, layer_size=20 * MiB)   # random bytes: gzip keeps ~60 MiB


@pytest.fixture
def full_disk_server(request, tmp_path, upstream_registry, image):
    push_image(upstream_registry.url, "library/big", "v1", image)
    # By default the client's own fills, one blob at a time; a test may turn the prefetch of an image's
    # blobs on (indirect parametrization: the number of prefetches at once).
    prefetch_blobs = getattr(request, "param", 0)
    server = EntrepotServer(tmp_path / "entrepot", [{"name": "hub", "upstream": upstream_registry.url}],
                            sections={"storage": STORAGE, "upstream": {"prefetch_blobs": prefetch_blobs}})
    with small_disk(server.data_dir, 40):
        server.start()
        try:
            yield server
        finally:
            server.stop()


def get(server: EntrepotServer, path: str, **options) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60, **options)


def pull_blob(server: EntrepotServer, digest: str) -> tuple[int, str]:
    response = get(server, f"/v2/hub/library/big/blobs/{digest}")
    return response.status_code, "sha256:" + hashlib.sha256(response.content).hexdigest()


def audited(server: EntrepotServer, count: int, timeout: float = 10.0) -> list[dict]:
    """The audit rows of pulls of big:v1 once there are `count` of them (the view follows the events)."""
    token = (server.data_dir / "admin.token").read_text().strip()
    deadline = time.monotonic() + timeout
    while True:
        response = get(server, "/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        rows = [row for row in response.json()["items"] if row.get("reference") == "v1"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def spool_files(server: EntrepotServer) -> list[str]:
    deadline = time.monotonic() + 5
    while True:   # a fill's cleanup runs just after its last reader is answered
        left = sorted(p.name for p in (server.data_dir / "storage" / "spool").iterdir())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def deleted_files_held_open(server: EntrepotServer) -> list[str]:
    """Files the server holds open that were deleted: their space is not given back until closed."""
    fds = f"/proc/{server.process.pid}/fd"
    held = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except FileNotFoundError:
            continue   # closed meanwhile
        if target.endswith("(deleted)") and str(server.data_dir) in target:
            held.append(target)
    return held


# With prefetch on, the manifest's GET starts no fill that would take free space below low_free_bytes:
# started all at once, the three 20 MiB layers filled the disk to `unavailable` (free space under
# min_free_bytes) where the client's own GETs, one after the other, leave it `degraded`.
@pytest.mark.parametrize("full_disk_server", [0, 8], indirect=True, ids=["no-prefetch", "prefetch"])
def test_a_60_mib_image_pulled_into_a_40_mib_disk_is_served_whole_and_the_disk_is_reported(full_disk_server, image):
    server = full_disk_server
    manifest = get(server, "/v2/hub/library/big/manifests/v1",
                   headers={"Accept": image.media_type})
    assert manifest.status_code == 200 and manifest.content == image.manifest_bytes

    digests = [image.config.digest] + [blob.digest for blob in image.layers]
    # The first layer fits and is kept; then the others, each pulled by two clients at once (the
    # second joins the first one's fill), fill the disk midway.
    assert pull_blob(server, digests[1]) == (200, digests[1])
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda d: (d, pull_blob(server, d)), digests + digests))
    assert [(digest, status, received) for digest, (status, received) in answers] == \
        [(digest, 200, digest) for digest in digests + digests]

    assert spool_files(server) == []   # failed fills gave their space back at once
    assert deleted_files_held_open(server) == []
    assert free_bytes(server.data_dir) < STORAGE["low_free_bytes"]
    ready = get(server, "/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["blob_storage"]) == (200, "degraded", "low")

    # Pulled again after the disk filled: still served, and audited.
    again = get(server, "/v2/hub/library/big/manifests/v1", headers={"Accept": image.media_type})
    assert again.status_code == 200 and again.content == image.manifest_bytes
    assert [pull_blob(server, digest) for digest in digests] == [(200, digest) for digest in digests]
    assert len(audited(server, 2)) == 2
    assert 'reason="storage"' in get(server, "/metrics").text   # fill_failed{reason="storage"}
    assert " 500 " not in server.log_tail(400) and "Traceback" not in server.log_tail(400)


def fills_ended(server: EntrepotServer, timeout: float = 10.0) -> dict[str, float]:
    """entrepot_fills_* of the server once every fill it started has ended: started, completed, and
    failed by reason (`failed_storage`, ...)."""
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, float] = {"started": 0.0, "completed": 0.0, "failed": 0.0}
        for line in get(server, "/metrics").text.splitlines():
            for kind in ("started", "completed", "failed"):
                if line.startswith(f"entrepot_fills_{kind}_total{{"):
                    value = float(line.rsplit(" ", 1)[1])
                    counts[kind] += value
                    if kind == "failed":
                        reason = line.split('reason="', 1)[1].split('"', 1)[0]
                        counts[f"failed_{reason}"] = counts.get(f"failed_{reason}", 0.0) + value
        if (counts["started"] and counts["started"] == counts["completed"] + counts["failed"]) \
                or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


@pytest.mark.parametrize("full_disk_server", [8], indirect=True, ids=["prefetch"])
def test_a_cold_manifest_prefetches_only_the_blobs_the_disk_has_room_for_above_low_free_bytes(full_disk_server, image):
    """Started all at once, the prefetches of the three 20 MiB layers (60 MiB into about 38 MiB free) filled
    the disk and all failed, racing the cold pull's own event commits for the last bytes (once the disk
    ended `unavailable`). Only the config fits above low_free_bytes (24 MiB): nothing else starts before
    the client asks, and the client's own GETs end the way they do without prefetch."""
    server = full_disk_server
    manifest = get(server, "/v2/hub/library/big/manifests/v1", headers={"Accept": image.media_type})
    assert manifest.status_code == 200 and manifest.content == image.manifest_bytes
    prefetched = fills_ended(server)
    assert (prefetched["started"], prefetched["completed"], prefetched["failed"]) == (1, 1, 0), prefetched
    assert free_bytes(server.data_dir) >= STORAGE["low_free_bytes"]
    ready = get(server, "/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["blob_storage"]) == (200, "ready", "ok")

    digests = [image.config.digest] + [blob.digest for blob in image.layers]
    assert [pull_blob(server, digest) for digest in digests] == [(200, digest) for digest in digests]
    assert spool_files(server) == [] and deleted_files_held_open(server) == []
    assert free_bytes(server.data_dir) < STORAGE["low_free_bytes"]
    ready = get(server, "/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["blob_storage"]) == (200, "degraded", "low")
    assert " 500 " not in server.log_tail(400) and "Traceback" not in server.log_tail(400)


def test_a_disk_with_no_room_at_all_answers_507_or_503_never_500_and_readyz_says_storage_full(
        full_disk_server, image):
    server = full_disk_server
    filler = fill_up(server.data_dir)
    try:
        assert free_bytes(server.data_dir) < STORAGE["min_free_bytes"]
        ready = get(server, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["blob_storage"] == "unavailable"
        assert ready.json()["errors"]["blob_storage"].startswith("storage full:")

        # The event store shares the disk: a pull it cannot record is a 503 (seen: "database or disk is
        # full"), never a 500; nothing half-written is served.
        manifest = get(server, "/v2/hub/library/big/manifests/v1", headers={"Accept": image.media_type})
        assert manifest.status_code in (200, 503), manifest.text
        if manifest.status_code == 200:
            assert manifest.content == image.manifest_bytes
        else:
            assert manifest.json()["errors"][0]["code"] == "UNAVAILABLE"
        # Blobs storage cannot keep are served straight from upstream, whole and verified.
        digests = [image.config.digest] + [blob.digest for blob in image.layers]
        assert [pull_blob(server, digest) for digest in digests] == [(200, digest) for digest in digests]
        assert deleted_files_held_open(server) == []
        assert spool_files(server) == []
    finally:
        filler.unlink()

    ready = get(server, "/readyz")
    assert ready.json()["blob_storage"] in ("ok", "low"), ready.json()
    after = get(server, "/v2/hub/library/big/manifests/v1", headers={"Accept": image.media_type})
    assert after.status_code == 200
    # The pull made while the disk was full is audited once there is room again (the group commit
    # kept it), as answered: a 200, or an `error` with its 503; and the pull after it too.
    rows = audited(server, 2)
    assert len(rows) == 2, rows
    assert sorted(row["status"] for row in rows) == sorted([manifest.status_code, 200]), rows
