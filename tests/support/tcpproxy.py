"""A byte-level TCP proxy in front of an HTTP peer (moto's S3) that notes request lines and can hold
the requests of one method (e.g. DELETE) until released, then drops them (as a killed client's request
would never arrive): whatever the body encoding, everything else is forwarded as is."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.request_lines: list[str] = []     # "DELETE /bucket/key HTTP/1.1", in arrival order
        self.hold_method: str | None = None   # requests starting with this method wait for release()
        self.held = threading.Event()         # set once a request is being held
        self._released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def requests(self, method: str) -> list[str]:
        return [line.split(" ")[1] for line in list(self.request_lines) if line.startswith(method + " ")]

    def hold(self, method: str) -> None:
        self._released.clear()
        self.held.clear()
        self.hold_method = method

    def release(self) -> None:
        self.hold_method = None
        self._released.set()

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closed = True
        self.release()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and data[:1].isalpha():   # a send that starts a request: its request line
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    self.request_lines.append(line)
                    if self.hold_method and line.startswith(self.hold_method + " "):
                        self.held.set()
                        self._released.wait()
                        return   # dropped: the connection closes (finally)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
