"""What `entrepot serve` logs at INFO by default: fills, upstream failures, refusals (one line each); a hit: nothing."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration


def log_lines(server, since: int) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()[since:]


def line_count(server) -> int:
    return len(server.log_path.read_text(errors="replace").splitlines())


def until_logged(server, since: int, text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in log_lines(server, since)):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n" + "\n".join(log_lines(server, since))
        time.sleep(0.05)
    return log_lines(server, since)


@pytest.fixture
def proxied(upstream_registry, entrepot_server_factory):
    image = build_image("server-log", layers=1, layer_size=2_000_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    with FaultProxy(upstream_registry.url) as proxy:
        # A cold blob's fill is the client's own, not a prefetch ([upstream] prefetch_blobs).
        yield entrepot_server_factory([{"name": "org", "upstream": proxy.url}],
                                      sections={"upstream": {"prefetch_blobs": 0}}), proxy, image


def test_a_cold_blob_logs_its_fill_with_size_time_and_rate_and_a_warm_hit_logs_nothing(proxied):
    server, _, image = proxied
    layer = image.layers[0]
    url = f"{server.url}/v2/org/team/app/blobs/{layer.digest}"
    manifest = f"{server.url}/v2/org/team/app/manifests/1"
    assert httpx.get(manifest, headers={"Accept": image.media_type}, timeout=30).headers["x-cache"] == "MISS"
    since = line_count(server)
    assert httpx.get(url, timeout=30).headers["x-cache"] == "MISS"
    lines = until_logged(server, since, "fill finished")
    assert any(f"fill started: org org repository team/app blob {layer.digest} ({len(layer.data)} bytes)" in line
               for line in lines)
    finished = next(line for line in lines if "fill finished" in line)
    assert f"org org repository team/app blob {layer.digest}: {len(layer.data)} bytes in " in finished
    assert finished.endswith(" MiB/s)") and " INFO entrepot: " in finished

    since = line_count(server)
    for _ in range(3):
        assert httpx.get(url, timeout=30).headers["x-cache"] == "HIT"
        assert httpx.get(manifest, headers={"Accept": image.media_type}, timeout=30).headers["x-cache"] == "HIT"
    httpx.get(f"{server.url}/v2/", timeout=5)
    assert log_lines(server, since) == []


def test_an_upstream_failure_is_logged_with_org_repository_and_reason_and_the_client_error_keeps_its_shape(proxied):
    server, proxy, _ = proxied
    proxy.add(Fault(r"/v2/team/", status=503, times=None))
    since = line_count(server)
    answers = [httpx.get(f"{server.url}/v2/org/team/{name}/manifests/1", timeout=10) for name in ("one", "two", "three",
                                                                                                  "four", "four")]
    assert {answer.status_code for answer in answers} == {503}
    details = [answer.json()["errors"][0]["detail"] for answer in answers]
    assert "treated as unavailable" in answers[-1].json()["errors"][0]["message"]   # answered by the back-off
    host = proxy.url.split("://")[1]
    assert details == [{"upstream": host}] * 5        # the same shape on the first failure and during back-off
    lines = until_logged(server, since, "upstream back-off")
    assert any(f"upstream failure: org org repository team/one: upstream {host} answered 503" in line
               for line in lines)
    assert any("refused: org org repository team/one reference 1: 503 UNAVAILABLE: " in line for line in lines)
    # The same refusal again within the minute is held back: one line for team/four, not two.
    assert len([line for line in lines if "refused: org org repository team/four " in line]) == 1
