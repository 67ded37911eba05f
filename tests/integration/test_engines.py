"""`entrepot serve` on each `[server] engine` (granian, the default, and uvicorn): warm blobs (granian
sends them by pathsend), ranges, HEAD, the access log, and process life (SIGTERM exits cleanly,
SIGKILL leaves nothing serving the port)."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.images import build_image, push_image, sha256

pytestmark = pytest.mark.integration


# One server per engine for the tests that only read (one org each, so a per-org counter sees one
# test's requests only); the process-life test gets servers of its own, since it stops them.
READING_TESTS = ("whole", "range", "head", "log", "secret")


class Lab:
    """An upstream and, per engine, one `entrepot serve` with an org per reading test."""

    def __init__(self, upstream, server) -> None:
        self.upstream, self.server = upstream, server

    def warm(self, org: str):
        """A blob of the org's own, pulled once (cold) through it: (server, layer, its URL)."""
        return pull_cold(self.server, self.upstream, org)


def pull_cold(server, upstream, org: str):
    image = build_image(f"granian-{org}", layers=1, layer_size=3_000_000)
    push_image(upstream.url, f"team/{org}", "1", image)
    layer = image.layers[0]
    url = f"{server.url}/v2/{org}/team/{org}/blobs/{layer.digest}"
    cold = httpx.get(url, timeout=30)
    assert cold.status_code == 200 and cold.headers["x-cache"] == "MISS", cold.text
    return server, layer, url


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def lab(request, module_upstream_registry_factory, module_entrepot_server_factory) -> Lab:
    upstream = module_upstream_registry_factory()
    server = module_entrepot_server_factory([{"name": org, "upstream": upstream.url} for org in READING_TESTS],
                                            server={"engine": request.param}, access_log=True)
    server.engine = request.param
    return Lab(upstream, server)


@pytest.fixture(params=["granian", "uvicorn"])
def served(request, upstream_registry, entrepot_server_factory):
    """A server of this test's own (it may stop and restart it), with one blob pulled cold."""
    server = entrepot_server_factory([{"name": "org", "upstream": upstream_registry.url}],
                                     server={"engine": request.param}, access_log=True)
    server.engine = request.param
    return pull_cold(server, upstream_registry, "org")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except ConnectionRefusedError:
        return False


def test_a_warm_blob_is_served_whole(lab):
    server, layer, url = lab.warm("whole")
    warm = httpx.get(url, timeout=30)
    assert warm.status_code == 200
    assert warm.headers["server"] == server.engine  # the engine setting took effect
    assert warm.headers["x-cache"] == "HIT"
    assert warm.headers["docker-content-digest"] == layer.digest
    assert warm.headers["content-length"] == str(layer.size)
    assert warm.headers["content-type"] == "application/octet-stream"
    assert sha256(warm.content) == layer.digest
    assert "transfer-encoding" not in warm.headers
    scraped = httpx.get(f"{server.url}/metrics").text  # bytes the server sent itself still count
    served = [s.value for family in text_string_to_metric_families(scraped) for s in family.samples
              if s.name == "entrepot_served_bytes_total" and s.labels == {"kind": "blob", "org": "whole"}]
    assert served == [2 * layer.size]  # the cold pull and this one


def test_a_range_of_a_warm_blob_is_served_in_chunks(lab):
    server, layer, url = lab.warm("range")
    part = httpx.get(url, headers={"Range": "bytes=1000-2999999"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-2999999/{layer.size}"
    assert part.headers["content-length"] == str(2_999_000)
    assert part.content == layer.data[1000:3_000_000]
    tail = httpx.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == layer.data[-10:]


def test_head_has_the_length_and_no_body(lab):
    server, layer, url = lab.warm("head")
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(layer.size)
        assert client.get(f"{server.url}/v2/").status_code == 200  # the connection still works after the HEAD


def settled_log(server, last_line_part: str, timeout: float = 5.0) -> str:
    """The log once it has the line with `last_line_part`: a line is written just after its answer is sent."""
    deadline = time.monotonic() + timeout
    while last_line_part not in (log := server.log_tail(200)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return log


def test_the_access_log_has_a_line_per_request_with_its_query_and_size(lab):
    server, layer, url = lab.warm("log")
    httpx.get(url, timeout=30)
    httpx.get(f"{server.url}/v2/log/team/log/manifests/nope?ns=docker.io", timeout=30)
    log = settled_log(server, "manifests/nope?ns=docker.io")
    # one format whichever engine serves: the app writes it (containerd's ?ns= must show)
    assert f'"GET /v2/log/team/log/blobs/{layer.digest} HTTP/1.1" 200 {layer.size} ' in log
    assert '"GET /v2/log/team/log/manifests/nope?ns=docker.io HTTP/1.1" 404 ' in log


def test_the_access_log_never_writes_a_credential_sent_in_the_query_string(lab):
    server, layer, url = lab.warm("secret")
    httpx.get(f"{url}?token=t0ken-value&X-Amz-Signature=sig-value&n=1", timeout=30)
    httpx.get(f"{server.url}/v2/?access_token=access-value&password=pw-value", timeout=30)
    log = settled_log(server, "/v2/?access_token=")
    for secret in ("t0ken-value", "sig-value", "access-value", "pw-value"):
        assert secret not in log
    assert (f'"GET /v2/secret/team/secret/blobs/{layer.digest}?token=REDACTED&X-Amz-Signature=REDACTED&n=1 '
            'HTTP/1.1" 200 ') in log
    assert '"GET /v2/?access_token=REDACTED&password=REDACTED HTTP/1.1" 200 ' in log


def test_sigterm_stops_cleanly_and_sigkill_leaves_no_listener(served):
    server, layer, url = served
    port = server.port
    # SIGTERM: lifespan shutdown ran; uvicorn re-raises the signal once it has shut down
    assert server.stop() in ((0,) if server.engine == "granian" else (0, -signal.SIGTERM))
    assert not listening(port)
    server.start()
    assert httpx.get(url, timeout=30).headers["x-cache"] == "HIT"
    server.kill()
    # granian's usual server would leave a worker process holding the port; the embedded one runs in
    # `entrepot serve` itself, so the port is free for the next start.
    assert not listening(port)
    server.start()
    again = httpx.get(url, timeout=30)
    assert again.status_code == 200 and sha256(again.content) == layer.digest


@pytest.mark.parametrize("engine", ["granian", "uvicorn"])
def test_a_second_server_on_a_bound_port_fails_at_start_with_one_line(engine, tmp_path, entrepot_server_factory):
    first = entrepot_server_factory([], server={"engine": engine})
    # The same config (so the same port), another data dir: once, granian silently shared the port.
    second = first.cli("serve", "--data-dir", str(tmp_path / "other"), timeout=30)
    assert second.returncode == 1
    assert second.stdout == ""   # in particular no "serving on" line
    assert second.stderr == f"entrepot: cannot listen on 127.0.0.1:{first.port}: address already in use " \
                             "(is another server running?)\n"
    assert not (tmp_path / "other").exists()   # refused before anything was opened
    assert httpx.get(f"{first.url}/v2/").status_code == 200


def test_a_server_asked_for_port_0_says_the_port_it_got(entrepot_server_factory):
    server = entrepot_server_factory([])   # tests/support/server.py starts on port 0 and reads the line
    assert server.port != 0
    assert f"Entrepôt serving on http://127.0.0.1:{server.port} " in server.log_tail()
    assert httpx.get(f"{server.url}/v2/").status_code == 200
