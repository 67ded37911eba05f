"""Run the Litestar app under the configured HTTP server ([server] engine): uvicorn or granian.

Both run in this one process, with the app's lifespan (the Container's projection runners and
group commit live in it), so a SIGKILL of `entrepot serve` leaves nothing behind serving the port.
"""

from __future__ import annotations

import logging

from infra.settings import Settings
from interfaces.shutdown import ShutdownDeadline

log = logging.getLogger(__name__)

# Connections the kernel queues for us before we accept them. granian's embedded server defaults to
# 128 and accepts no more connections than its backpressure (by default the backlog again), so 800
# clients at once got resets or timeouts; a thousand must be queued and served. Linux caps it at
# net.core.somaxconn (4096 by default since 5.4).
LISTEN_BACKLOG = 4096
SOMAXCONN = "/proc/sys/net/core/somaxconn"


def listen_backlog() -> int:
    """LISTEN_BACKLOG, with a warning when the kernel will cap it lower."""
    try:
        with open(SOMAXCONN) as file:
            cap = int(file.read())
    except (OSError, ValueError):
        return LISTEN_BACKLOG
    if cap < LISTEN_BACKLOG:
        log.warning("net.core.somaxconn is %d: at most %d connections wait to be accepted (raise it for bursts of "
                    "clients)", cap, cap)
    return LISTEN_BACKLOG


def run_uvicorn(app, settings: Settings) -> int:
    import uvicorn

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5, backlog=listen_backlog())
    server = uvicorn.Server(config)
    deadline, handle_exit = ShutdownDeadline(), server.handle_exit

    def stop(sig, frame) -> None:
        deadline.arm()   # the process ends even if the lifespan shutdown hangs on a database call
        handle_exit(sig, frame)
    server.handle_exit = stop
    server.run()
    return 0


def run_granian(app, settings: Settings) -> int:
    """granian's embedded server: its worker runs on our event loop, in this process.

    Not granian's usual `Granian(...).serve()`: that spawns worker processes, which outlive a
    SIGKILLed parent and keep the port. The embedded server installs no signal handlers, so we
    do; granian marks it experimental (it logs a warning at start).
    """
    import asyncio
    import signal

    import uvloop  # installed with uvicorn[standard]; granian's own CLI picks it too when present
    from granian.constants import Interfaces
    from granian.errors import FatalError
    from granian.log import LogLevels
    from granian.server.embed import Server

    # One worker, one Rust runtime thread (granian's defaults): with 2 runtime threads the
    # 4-stream blob and manifest numbers were no better on 2 cores (bench/engines.py).
    # backpressure (connections handled at once) follows the backlog: the kernel queues the rest.
    server = Server(app, address=settings.host, port=settings.port, interface=Interfaces.ASGI,
                    backlog=listen_backlog(), log_access=False, log_level=LogLevels(settings.log_level.lower()))

    deadline = ShutdownDeadline()

    def stop() -> None:
        deadline.arm()   # the process ends even if the lifespan shutdown hangs on a database call
        server.stop()    # stop accepting, end the worker, run lifespan shutdown

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        await server.serve()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())
    except FatalError:
        return 1  # the lifespan startup failed; granian has logged the app's traceback
    except RuntimeError as error:
        if server.wrks:
            raise
        # Nothing started yet: the listening socket could not be made (granian reports it so).
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, str(error).splitlines()[0])
        return 1
    # A worker that ended on its own (not by our stop()) makes serve() return as well.
    return 1 if server.interrupt_children else 0
