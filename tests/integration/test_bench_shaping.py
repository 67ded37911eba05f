"""bench/shaping.py: the remote-upstream model of bench.cold puts a registry's replies through its own HTB
class while inside, and leaves loopback as it was after (tc, as root: what CI runs as)."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading

import httpx
import pytest

from bench.shaping import shaped_ports

pytestmark = pytest.mark.integration


class _Body(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:   # noqa: N802 (http.server's naming)
        body = b"x" * 200_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


def tc(*args: str) -> str:
    return subprocess.run(["tc", *args], capture_output=True, text=True, check=True).stdout


def sent_by_class(classid: str) -> int:
    stats = tc("-s", "class", "show", "dev", "lo")
    block = stats.split(f"class htb {classid} ", 1)[1]
    return int(re.search(r"Sent (\d+) bytes", block)[1])


def test_a_shaped_port_replies_through_its_own_class_and_loopback_is_as_before_after():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    before = tc("qdisc", "show", "dev", "lo")
    try:
        with shaped_ports([port], 800):
            assert "htb 1:" in tc("qdisc", "show", "dev", "lo")
            assert "rate 800Mbit" in tc("class", "show", "dev", "lo")
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).content == b"x" * 200_000
            assert sent_by_class("1:10") >= 200_000   # the reply went through the port's class
        assert tc("qdisc", "show", "dev", "lo") == before
    finally:
        server.shutdown()
