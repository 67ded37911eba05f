"""The app built by bootstrap(), served by uvicorn on a thread of the test process, on a port it bound itself.

For tests that want a real HTTP server (streams, concurrent clients) and something injected, such
as a ManualClock: a `entrepot serve` subprocess cannot be handed either.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn

from infra.settings import Settings
from interfaces.bootstrap import Container, bootstrap
from interfaces.http.app import create_app
from interfaces.serving import bind_listener, bound_port


class InProcessServer:
    """`with InProcessServer(settings, clock=...) as server:` serves on server.url until the block ends."""

    def __init__(self, settings: Settings, startup_timeout: float = 20.0, **injected) -> None:
        self.container: Container = bootstrap(settings, **injected)
        self.data_dir = Path(self.container.data_dir)
        self.startup_timeout = startup_timeout
        self._listener = bind_listener("127.0.0.1", 0)
        self.port = bound_port(self._listener)
        self.container.serving_on("127.0.0.1", self.port)
        config = uvicorn.Config(create_app(self.container), log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)   # off the main thread it installs no signal handlers
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._listener]},
                                        name="entrepot-in-process", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the in-process server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._listener.close()
