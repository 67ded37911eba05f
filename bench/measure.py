"""One measurement each: wrk on a manifest, curl streams on a blob, a cold pull by N clients."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.images import ACCEPT_ALL, BenchImage
from bench.targets import Target

LUA = Path(__file__).with_name("manifest.lua")


class MeasurementFailed(RuntimeError):
    """A measurement whose requests failed: its numbers would mean nothing."""


# -- warm manifests: wrk ---------------------------------------------------------------------------

def wrk(url: str, seconds: float, connections: int = 32, threads: int = 2, headers: dict | None = None) -> dict:
    """Requests/s and latency percentiles (ms) of GET url at `connections` concurrent connections."""
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(LUA), url]
    for name, value in (headers or {}).items():   # e.g. Authorization: each request sends it
        command[1:1] = ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise MeasurementFailed(f"wrk failed on {url}: {done.stderr.strip() or done.stdout[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    if raw["requests"] == 0 or errors > 0.01 * raw["requests"]:
        raise MeasurementFailed(f"wrk on {url}: {errors} errors in {raw['requests']} requests ({raw})")
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"], "errors": errors}


# -- warm blobs: curl streams ----------------------------------------------------------------------

def curl(*args: str, timeout: float = 600) -> list[tuple[int, int]]:
    """(status, bytes) of each transfer of one curl run, bodies to /dev/null."""
    done = subprocess.run(["curl", "-s", "-w", "%{http_code} %{size_download}\n", *args],
                          capture_output=True, text=True, timeout=timeout)
    return [(int(code), int(size)) for code, size in (line.split() for line in done.stdout.splitlines() if line)]


def blob_throughput(url: str, size: int, streams: int, seconds: float) -> dict:
    """MiB/s of `streams` concurrent curl clients fetching the blob again and again for about `seconds`."""
    totals = [0] * streams
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + seconds

    def stream(number: int) -> None:
        batch = 1
        while True:  # at least one whole transfer, then until the deadline
            # One curl run fetches `batch` times over one connection: a process start per transfer
            # would cost as much as a 100 MB transfer at 1 GB/s.
            began = time.monotonic()
            for status, got in curl(*(["-o", "/dev/null", url] * batch)):
                if status != 200 or got != size:
                    errors.append(f"{url}: {status}, {got} of {size} bytes")
                    return
                totals[number] += got
            now = time.monotonic()
            if now >= deadline:
                return
            each = (now - began) / batch
            batch = max(1, min(1000, int((deadline - now) / each)))

    workers = [threading.Thread(target=stream, args=(n,)) for n in range(streams)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - start
    if errors:
        raise MeasurementFailed(errors[0])
    return {"mib_s": sum(totals) / elapsed / 2**20, "bytes": sum(totals), "seconds": elapsed}


# -- cold pulls ------------------------------------------------------------------------------------

def platform_manifest(http: httpx.Client, target: Target, image: BenchImage,
                      step: Callable[[str], None] = lambda _: None) -> dict:
    """GET the tag as a client does (an index → the linux/amd64 manifest by digest); `step(name)` is
    called after each of the two ("tag", "platform")."""
    answer = http.get(target.manifest_url(image.repository, image.tag), headers={"Accept": ACCEPT_ALL})
    step("tag")
    if answer.status_code != 200:
        raise MeasurementFailed(f"{target.name}: manifest {image.repository}:{image.tag}: {answer.status_code} "
                                f"{answer.text[:200]}")
    document = answer.json()
    if "manifests" in document:
        amd64 = next(m for m in document["manifests"] if m["platform"]["architecture"] == "amd64")
        answer = http.get(target.manifest_url(image.repository, amd64["digest"]), headers={"Accept": ACCEPT_ALL})
        if answer.status_code != 200:
            raise MeasurementFailed(f"{target.name}: manifest {amd64['digest']}: {answer.status_code}")
        document = answer.json()
    step("platform")
    return document


def _pull_with_curl(target: Target, image: BenchImage, phases: dict[str, float] | None = None) -> None:
    """`phases`, when given, gets the seconds of each step: the client's setup (an httpx.Client, its SSL
    context), `GET /v2/`, the tag (an index), the platform manifest, the blobs (one curl)."""
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        if phases is not None:
            phases[name] = now - mark
        mark = now

    with httpx.Client(timeout=120) as http:
        step("client")
        http.get(f"{target.url}/v2/")
        step("v2")
        document = platform_manifest(http, target, image, step)
    blobs = [document["config"], *document["layers"]]
    args = ["-Z", "--parallel-max", "4"]  # containers/image fetches layers in parallel too
    for blob in blobs:
        args += ["-o", "/dev/null", target.blob_url(image.repository, blob["digest"])]
    got = sorted(curl(*args))
    step("blobs")
    want = sorted((200, blob["size"]) for blob in blobs)
    if got != want:
        raise MeasurementFailed(f"{target.name}: blobs of {image.repository} answered {got}, wanted {want}")


def _pull_with_skopeo(target: Target, image: BenchImage) -> None:
    destination = tempfile.mkdtemp(prefix="bench-pull-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    try:
        done = subprocess.run(["skopeo", "--override-os", "linux", "--override-arch", "amd64", "copy", "--quiet",
                               "--src-tls-verify=false", f"docker://{target.image_ref(image.repository, image.tag)}",
                               f"dir:{destination}"], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise MeasurementFailed(f"{target.name}: skopeo copy failed: {done.stderr.strip()[-500:]}")
    finally:
        shutil.rmtree(destination, ignore_errors=True)


def cold_pull(target: Target, image: BenchImage, clients: int, client: str = "curl") -> dict:
    """Wall time of `clients` clients pulling the never-pulled `image` at once, and the upstream bytes it
    cost; with one curl client, the seconds of each of its steps too (`phases`, see _pull_with_curl)."""
    phases: dict[str, float] = {}
    if client == "skopeo":
        pull = _pull_with_skopeo
    elif clients == 1:
        pull = functools.partial(_pull_with_curl, phases=phases)
    else:
        pull = _pull_with_curl
    if target.upstream:
        target.upstream.mark()
    gate = threading.Barrier(clients + 1)
    errors: list[Exception] = []

    def one() -> None:
        gate.wait()
        try:
            pull(target, image)
        except Exception as error:  # reported below: a failed pull invalidates the measurement
            errors.append(error)

    workers = [threading.Thread(target=one) for _ in range(clients)]
    for worker in workers:
        worker.start()
    gate.wait()
    start = time.monotonic()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - start
    if errors:
        raise MeasurementFailed(f"{len(errors)} of {clients} pulls failed; first: {errors[0]}")
    result = {"seconds": wall, **({"phases": phases} if phases else {})}
    if target.upstream:
        target.upstream.settle()
        sent = target.upstream.sent()
        result |= {"upstream_bytes": sent["bytes"], "upstream_ratio": sent["bytes"] / image.pull_bytes,
                   "upstream_blob_gets": sent["blob_gets"], "upstream_heads": sent["heads"]}
    return result
