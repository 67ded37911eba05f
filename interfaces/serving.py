"""Run the Litestar app under the configured HTTP server ([server] engine): uvicorn or granian.

Both run in this one process, with the app's lifespan (the Container's projection runners and
group commit live in it), so a SIGKILL of `entrepot serve` leaves nothing behind serving the port.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket

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


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then move every object alive (modules, classes, the app, the views'
    and applications' machinery) to the permanent generation, which collections no longer visit.
    Call once start-up has built what it keeps, before serving. Returns the number of objects frozen.

    Why: a full (generation 2) collection visits every tracked object, and one ran every few cold pulls
    (each leaves long-lived objects behind). On the loaded bench machine each took 170-240 ms of the
    event loop, holding the GIL: a stall in the middle of the pulls under way. After the freeze the same
    collections took under 1 ms. Frozen objects are still freed by reference counting; only a cycle
    among them would never be collected, and start-up builds them to keep.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_ARENAS = 2   # malloc arenas the serving process may have (glibc's default: 8 per core)
BUFFER_HEAP_BYTES = 4 * 1024 * 1024   # byte buffers up to this size come from the heap, not a fresh mmap
HEAP_KEPT_BYTES = 16 * 1024 * 1024    # free heap kept for them before it is returned to the system


def keep_buffers_on_the_heap() -> bool:
    """Make glibc serve the byte buffers of a blob's path (socket reads up to 1 MiB, spool reads of
    1 MiB) from its heap instead of mapping fresh pages for each, which the kernel must zero: with
    glibc's own adaptive threshold, a buffer read short (a socket read filled to 256 KiB of 1 MiB)
    is shrunk before it is freed, and the threshold never rises past it. Measured by perf on cold
    pulls: page zeroing went from ~10 % of the server's CPU to ~3 %. At most HEAP_KEPT_BYTES of freed
    heap per malloc arena stays with the process. False where the C library is not glibc."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, BUFFER_HEAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT_BYTES))


def share_malloc_arenas() -> bool:
    """Let the serving process's threads share MALLOC_ARENAS malloc arenas instead of glibc's 8 per core.

    Each arena keeps up to HEAP_KEPT_BYTES of freed heap for the blob path's buffers (above); with a
    fill thread, a projection worker or an anyio thread each on an arena of its own, that was up to 16
    arenas here, and the server's RSS before a big cold pull grew with the cold pulls before it (247 MiB
    where session 8 saw 192). Python allocates its buffers with the GIL held, so the threads hardly ever
    contend for an arena. bench/run --quick, one round each, same code: RSS before the 128 MiB pull 228 ->
    191 MiB, peak 231 -> 207 MiB. Call before any thread starts (a thread keeps the arena it first got).
    An operator's MALLOC_ARENA_MAX, which glibc has already applied, is left alone. False where the C
    library is not glibc, or MALLOC_ARENA_MAX is set."""
    import ctypes
    import ctypes.util
    import os
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


class CannotListen(Exception):
    """The address cannot be listened on (in use, not ours); the message is the one line `serve` prints."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or CannotListen.

    Bound here rather than by the engine so that a port another process listens on is refused, whatever
    the engine: without SO_REUSEPORT the kernel refuses a second listener (granian's own sockets set it,
    so two servers would silently split the traffic). SO_REUSEADDR only lets a restart bind while the
    last run's connections are in TIME_WAIT; it never admits a second listener.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise CannotListen(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(listen_backlog())
    except OSError as error:
        listener.close()
        reason = "address already in use (is another server running?)" if error.errno == errno.EADDRINUSE \
            else (error.strerror or str(error)).lower()
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}") from None
    return listener


def bound_port(listener: socket.socket) -> int:
    return listener.getsockname()[1]


def run_uvicorn(app, settings: Settings, listener: socket.socket) -> int:
    """uvicorn serves on our listening socket (bound by bind_listener)."""
    import uvicorn

    config = uvicorn.Config(app, host=settings.host, port=bound_port(listener), log_level=settings.log_level,
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5, backlog=listen_backlog())
    server = uvicorn.Server(config)
    deadline, handle_exit = ShutdownDeadline(), server.handle_exit

    def stop(sig, frame) -> None:
        deadline.arm()   # the process ends even if the lifespan shutdown hangs on a database call
        handle_exit(sig, frame)
    server.handle_exit = stop
    server.run(sockets=[listener])
    return 0


def run_granian(app, settings: Settings, listener: socket.socket) -> int:
    """granian's embedded server: its worker runs on our event loop, in this process.

    Its public API takes an address, not a socket, and binds with SO_REUSEPORT. So `listener` is our
    check that the port is free (and the port 0 resolved to): it is closed and granian binds that
    port. Another process binding the port in the microseconds between is not guarded against.

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
    port = bound_port(listener)
    listener.close()
    server = Server(app, address=settings.host, port=port, interface=Interfaces.ASGI,
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
        log.error("cannot listen on %s:%s: %s", settings.host, port, str(error).splitlines()[0])
        return 1
    # A worker that ended on its own (not by our stop()) makes serve() return as well.
    return 1 if server.interrupt_children else 0
