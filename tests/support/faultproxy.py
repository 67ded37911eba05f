"""A reverse proxy in front of a real registry that injects the faults a registry cannot produce.

429s, 5xx, rate-limit headers, truncated or corrupted bodies and stalls, each for requests whose
path matches a pattern, a given number of times. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate",
              "proxy-authorization", "host"}


@dataclass
class Fault:
    path: str                        # regex searched in the request path
    method: str = "GET"
    times: int | None = 1            # None: every matching request
    status: int | None = None        # answer this status instead of forwarding
    headers: dict = field(default_factory=dict)   # added to the answer (forwarded or not)
    body: bytes = b""
    truncate_after: int | None = None   # forward this many body bytes, then drop the connection
    corrupt: bool = False               # flip one byte of the body
    stall_after: int | None = None      # forward this many body bytes, then stall
    stall_seconds: float = 0.0
    chunk_delay: float = 0.0            # seconds between forwarded chunks (a slow upstream)
    chunk_size: int = 65536
    hits: int = 0


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path) and (fault.times is None or fault.times > 0):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                fault = proxy._take(self.command, self.path)
                if fault is not None and fault.status is not None:
                    proxy.requests.append((self.command, self.path, fault.status))
                    self.send_response(fault.status)
                    for name, value in fault.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(fault.body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                request = proxy._client.build_request(self.command, proxy.upstream_url + self.path, headers=headers)
                response = proxy._client.send(request, stream=True)
                try:
                    proxy.requests.append((self.command, self.path, response.status_code))
                    self.send_response(response.status_code)
                    for name, value in response.headers.multi_items():
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    for name, value in (fault.headers if fault else {}).items():
                        self.send_header(name, value)
                    if "content-length" not in response.headers:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if self.command != "HEAD":
                        self._body(response, fault)
                finally:
                    response.close()

            def _body(self, response: httpx.Response, fault: Fault | None) -> None:
                sent = 0
                flipped = False
                for chunk in response.iter_raw(fault.chunk_size if fault else None):
                    if fault and fault.chunk_delay:
                        time.sleep(fault.chunk_delay)
                    if fault and fault.corrupt and not flipped and chunk:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                        flipped = True
                    limit = fault.truncate_after if fault else None
                    stall = fault.stall_after if fault else None
                    if stall is not None and sent + len(chunk) > stall:
                        self.wfile.write(chunk[: max(0, stall - sent)])
                        self.wfile.flush()
                        time.sleep(fault.stall_seconds)
                        self.close_connection = True
                        return
                    if limit is not None and sent + len(chunk) > limit:
                        self.wfile.write(chunk[: max(0, limit - sent)])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)

            do_GET = do_HEAD = _answer

        return Handler

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
