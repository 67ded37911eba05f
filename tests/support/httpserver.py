"""A scripted HTTP/1.1 server on a loopback port, in a thread: for upstream behaviour a real registry lacks."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str                       # with the query string
    headers: dict[str, str]         # lower-case names
    body: bytes = b""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # False: send no Content-Length and end the body by closing the connection.
    content_length: bool = True
    # Instead of `body`: pieces written and flushed one by one (a generator may pause between them).
    # Set Content-Length in `headers` yourself.
    chunks: Iterable[bytes] | None = None


Handler = Callable[[Request, "LocalHTTPServer"], Reply]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # Clients that stop reading (a refused oversized body, a timeout) reset the connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalHTTPServer:
    """Answers every request with `handler(request, server)`; records requests in `.requests`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        """`host`: another loopback address (127.0.0.2, ...) stands for a host the SSRF tests allow or not."""
        self.handler = handler
        self.host = host
        self.requests: list[Request] = []
        self._server = _QuietServer((host, 0), self._request_handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length) if length else b"")
                server.requests.append(request)
                reply = server.handler(request, server)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if not reply.content_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                elif "content-length" not in {name.lower() for name in reply.headers}:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD" and reply.chunks is not None:
                    for chunk in reply.chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                elif self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

        return RequestHandler

    def start(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
